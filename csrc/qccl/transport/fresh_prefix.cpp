#include "qccl/transport/fresh_prefix.h"

#include <algorithm>
#include <functional>
#include <sstream>
#include <vector>

#include "qccl/common/errors.h"

// The handshake (docs/design.md, "Restarts"). Rank 0 draws n from a counter; the others
// must learn n without ever taking an earlier creation's n for it. A key rank 0 writes
// once can always be stale for a rank that reads it before rank 0 of this creation has
// written, so each other rank asks through a join log whose slots are never reused:
//
//   other rank r:  appends "hello r" (slot s), waits for the answer to slot s, appends
//                  "joined r n".
//   rank 0:        draws n, answers the last size-1 slots appended before it looked (the
//                  requests that came earlier), then reads every slot appended after it,
//                  answering requests, until every rank has appended "joined r n".
//
// It is enough that the ranks of earlier creations are gone: then everything appended
// after a rank's own first append was written by this creation, an answer to slot s can
// only come from this creation's rank 0, and "joined r n" with this n only from rank r.

namespace qccl {
namespace {

constexpr const char* kCreations = "qccl/creations";  // counter: the last n drawn
constexpr const char* kSlots = "qccl/join/slots";  // counter: the last slot of the join log

std::string slotKey(int64_t slot) {
  return "qccl/join/" + std::to_string(slot);
}

std::string answerKey(int64_t slot) {
  return slotKey(slot) + "/answer";
}

class Deadline {
 public:
  explicit Deadline(std::chrono::milliseconds timeout)
      : timeout_(timeout), end_(std::chrono::steady_clock::now() + timeout) {}

  // At least 1 ms: to c10d stores a zero timeout means "wait forever".
  std::chrono::milliseconds left() const {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end_ - std::chrono::steady_clock::now());
    return std::max(left, std::chrono::milliseconds(1));
  }

  std::chrono::milliseconds timeout() const {
    return timeout_;
  }

 private:
  std::chrono::milliseconds timeout_;
  std::chrono::steady_clock::time_point end_;
};

// Waits until `keys` exist, or raises naming who did not come (`missing()`, asked only then).
void waitFor(
    c10d::Store& store,
    const std::vector<std::string>& keys,
    const Deadline& deadline,
    int rank,
    const std::function<std::string()>& missing) {
  try {
    store.wait(keys, deadline.left());
  } catch (const std::exception&) {
    throwCommError(
        "creating the group's transports failed on rank " + std::to_string(rank) + ": " + missing() +
        " within " + std::to_string(deadline.timeout().count()) + " ms (" +
        describeException(std::current_exception()) + ")");
  }
}

// A slot of its own (add is atomic), then the message in it.
int64_t append(c10d::Store& store, const std::string& message) {
  const int64_t slot = store.add(kSlots, 1);
  store.set(slotKey(slot), message);
  return slot;
}

std::string joinThroughRankZero(c10d::Store& store, int rank, const Deadline& deadline) {
  const int64_t request = append(store, "hello " + std::to_string(rank));
  waitFor(store, {answerKey(request)}, deadline, rank, [] { return std::string("rank 0 did not answer"); });
  const std::string n = store.get_to_str(answerKey(request));
  append(store, "joined " + std::to_string(rank) + " " + n);
  return n;
}

void answer(c10d::Store& store, const std::vector<int64_t>& slots, const std::string& n) {
  if (slots.empty()) {
    return;
  }
  std::vector<std::string> keys;
  for (const auto slot : slots) {
    keys.push_back(answerKey(slot));
  }
  store.multiSet(keys, std::vector<std::vector<uint8_t>>(keys.size(), std::vector<uint8_t>(n.begin(), n.end())));
}

std::string missingRanks(const std::vector<bool>& joined) {
  std::string text = "ranks";
  for (size_t r = 0; r < joined.size(); ++r) {
    if (!joined[r]) {
      text += (text == "ranks" ? " " : ", ") + std::to_string(r);
    }
  }
  return text + " did not join";
}

std::string leadJoin(c10d::Store& store, int size, const Deadline& deadline) {
  const std::string n = std::to_string(store.add(kCreations, 1));
  // Requests appended before this look number at most size - 1 (a rank confirms only
  // after an answer), and they are the newest: the last size - 1 slots hold them. Older
  // slots answered with them belong to ranks that are gone, and slots are never reused.
  const int64_t looked = store.add(kSlots, 0);
  std::vector<int64_t> early;
  for (int64_t slot = std::max<int64_t>(1, looked - size + 2); slot <= looked; ++slot) {
    early.push_back(slot);
  }
  answer(store, early, n);

  std::vector<bool> joined(size, false);
  joined[0] = true;
  int missing = size - 1;
  for (int64_t next = looked + 1; missing > 0;) {
    // A rank that has not confirmed yet appends at least once more, so slot `next` comes.
    waitFor(store, {slotKey(next)}, deadline, 0, [&] { return missingRanks(joined); });
    const int64_t last = store.add(kSlots, 0);
    std::vector<std::string> keys;
    for (int64_t slot = next; slot <= last; ++slot) {
      keys.push_back(slotKey(slot));
    }
    waitFor(store, keys, deadline, 0, [&] { return missingRanks(joined); });  // allocated, text on its way
    const auto messages = store.multiGet(keys);
    std::vector<int64_t> requests;
    for (size_t i = 0; i < messages.size(); ++i) {
      std::istringstream message(std::string(messages[i].begin(), messages[i].end()));
      std::string kind, theirN;
      int r = -1;
      message >> kind >> r >> theirN;
      if (kind == "hello") {
        requests.push_back(next + static_cast<int64_t>(i));
      } else if (kind == "joined" && theirN == n && r > 0 && r < size && !joined[r]) {
        joined[r] = true;
        --missing;
      }
    }
    answer(store, requests, n);
    next = last + 1;
  }
  return n;
}

} // namespace

std::string agreeOnFreshPrefix(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int size,
    std::chrono::milliseconds timeout) {
  QCCL_CHECK_VALUE(store, "creating a group needs a store, not null");
  QCCL_CHECK_VALUE(size > 0 && rank >= 0 && rank < size, "rank ", rank, " is not in a group of size ", size);
  const Deadline deadline(timeout);
  const std::string n = rank == 0 ? leadJoin(*store, size, deadline) : joinThroughRankZero(*store, rank, deadline);
  return "qccl/" + n + "/";
}

} // namespace qccl
