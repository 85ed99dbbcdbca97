#include "qccl/transport/shm/connect.h"

#include <string>
#include <vector>

#include <c10/util/Logging.h>

namespace qccl::shm {
namespace {

std::vector<uint8_t> asBytes(const std::string& text) {
  return std::vector<uint8_t>(text.begin(), text.end());
}

// Every rank's value of `key` (this rank's is `mine`), in rank order.
std::vector<std::string> shareWithAll(c10d::Store& store, const std::string& key, int rank, int size, const std::string& mine) {
  store.set(key + std::to_string(rank), asBytes(mine));
  std::vector<std::string> all;
  for (int r = 0; r < size; ++r) {
    const auto bytes = r == rank ? asBytes(mine) : store.get(key + std::to_string(r));
    all.emplace_back(bytes.begin(), bytes.end());
  }
  return all;
}

constexpr char kName[] = "name ";
constexpr char kNoRoom[] = "unavailable ";

// The steps of connect.h for an endpoint (Channel or Mailbox) that `make` creates, with
// keys under `key`; `what` names its traffic (and verb) in the warning.
template <typename Endpoint, typename Make, typename Unlink>
std::unique_ptr<Endpoint> connectEndpoint(
    c10d::Store& store,
    int rank,
    int size,
    const std::string& key,
    const char* what,
    Make make,
    Unlink unlinkOwn) {
  std::unique_ptr<Endpoint> endpoint;
  std::string mine;
  try {
    endpoint = make();
    mine = kName + endpoint->myName();
  } catch (const SegmentTooLarge& tooLarge) {
    mine = kNoRoom + std::string(tooLarge.what());
  } catch (const c10::DistBackendError& error) {  // no /dev/shm, say: the peers must hear it too
    mine = kNoRoom + std::string(error.what_without_backtrace());
  }
  const auto segments = shareWithAll(store, key, rank, size, mine);
  std::vector<std::string> names;
  for (int r = 0; r < size; ++r) {
    if (segments[r].rfind(kName, 0) != 0) {
      if (rank == 0 || r == rank) {  // one warning for the group, from a rank that knows
        LOG(WARNING) << "qccl: rank " << r << " of a group on one host could not use shared memory ("
                     << segments[r].substr(sizeof(kNoRoom) - 1) << "); its " << what
                     << " over sockets instead. Make /dev/shm larger (docker run --shm-size=...) to get "
                        "memory speed";
      }
      return nullptr;
    }
    names.push_back(segments[r].substr(sizeof(kName) - 1));
  }
  endpoint->attach(names);
  unlinkOwn(*endpoint);
  return endpoint;
}

} // namespace

std::unique_ptr<Channel> connectSharedMemory(
    c10d::Store& store,
    int rank,
    int size,
    uint64_t slotBytes,
    std::chrono::milliseconds timeout) {
  return connectEndpoint<Channel>(
      store, rank, size, "qccl_shm/segment/", "collectives and point-to-point traffic run",
      [&] { return std::make_unique<Channel>(rank, size, slotBytes, timeout); },
      [](Channel& channel) { channel.unlinkOwn(); });
}

std::unique_ptr<Mailbox> connectMailbox(
    c10d::Store& store,
    int rank,
    int size,
    uint64_t ringBytes,
    std::chrono::milliseconds timeout) {
  return connectEndpoint<Mailbox>(
      store, rank, size, "qccl_shm/mailbox/", "point-to-point traffic runs",
      [&] { return std::make_unique<Mailbox>(rank, size, ringBytes); },
      [timeout](Mailbox& mailbox) { mailbox.unlinkOwn(timeout); });
}

} // namespace qccl::shm
