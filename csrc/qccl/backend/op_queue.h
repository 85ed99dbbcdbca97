#pragma once

// The group's worker thread: starts collectives in the order the caller issued them.
// Every rank issues the same collectives in the same order, so every rank's worker calls
// Gloo in the same order, which is what keeps composite operations (several Gloo calls
// with local work in between) from interleaving differently across ranks.
//
// The worker takes the queued ops in batches: `admit` checks a batch across ranks (one
// exchange for every op queued) and says how many of them run now. A caller that waits
// for the only queued op while the worker is idle runs it itself (runOnCaller): a
// synchronous call then costs no hand-off to the worker and back, which on one host
// costs more than the call. An op either finishes
// on the worker, or starts a transfer and lets the worker go on (StartedTransfer), so
// that the group's calls overlap on the wire while Gloo still sees them in order. Within
// a batch, consecutive joinable ops run together (see Joinable): the batch is the same on
// every rank, so are the runs.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ThreadLocalState.h>

#include "qccl/algo/agreement.h"
#include "qccl/algo/carried_call.h"
#include "qccl/work/work.h"
#include "qccl/transport/started_transfer.h"

namespace qccl {

// A call that can run together with the calls queued right before it (consecutive
// compressed all_reduces share one chunk pipeline). Whether it joins must depend only
// on facts every rank shares, so that every rank runs the same calls together.
class Joinable {
 public:
  virtual ~Joinable() = default;
  // Whether this call may run together with `previous`, the call queued right before it.
  virtual bool joins(const Joinable& previous) const = 0;
};

class QueuedWork;

struct QueuedOp {
  c10::intrusive_ptr<FutureWork> work;
  std::string name;
  OpSignature signature;
  // Every CPU tensor the op reads or writes: it starts only once no transfer still on the
  // wire touches one of their storages (a call that reads what an earlier async call
  // writes, or writes what it reads, sees the calls one after another, as on a stream).
  std::vector<at::Tensor> touches;
  // Runs the op; returns the transfer it left running, if any.
  std::function<std::optional<StartedTransfer>()> body;
  // A small call whose data can travel with its check (algo/carried_call.h).
  std::shared_ptr<algo::CarriedCall> carried;
  // Set when the call can run together with its neighbours; null otherwise.
  std::shared_ptr<Joinable> joinable;
  // The caller's thread-local state, captured while torch.profiler records on the
  // caller's thread (null otherwise): the worker runs the op under it, so the op's phases
  // (algo/phase.h) land in the caller's profile, as autograd's threads do.
  std::shared_ptr<at::ThreadLocalState> callersState;
  // False for a call the cross-rank check leaves out (monitored_barrier: it must name a
  // rank that never arrives, where the check would wait for that rank itself).
  bool checked = true;
  // Set by the queue for the batch being checked: `carried`'s data rides in this check.
  bool ridesInCheck = false;
};

class OpQueue {
 public:
  // Given the oldest queued ops, returns how many run now (a prefix, at least one unless
  // it throws) and, for each, the error that fails it instead of running (null: run it).
  // If it throws, the whole batch fails with that error.
  using Admit = std::function<std::vector<std::exception_ptr>(const std::vector<const QueuedOp*>& batch)>;
  // Runs two or more admitted, consecutive, joinable ops together (instead of each one's
  // body); if it throws, every one of them fails with that error.
  using RunJointly = std::function<void(const std::vector<QueuedOp*>& ops)>;
  // Told of every op that failed while running (its body, its transfer, the check that
  // admits it, its deadline), with the error, before the op's work is failed with it.
  // Not told of ops that admit refused, nor of ops failed by fail()/stop(). Runs on the
  // worker, the watchdog or a transport's completion thread, holding no lock of the queue.
  using OnFailure = std::function<void(const std::string& name, const std::exception_ptr& error)>;

  // Without runJointly, every op runs on its own.
  OpQueue(int rank, Admit admit, RunJointly runJointly = nullptr, OnFailure onFailure = nullptr);
  ~OpQueue();
  OpQueue(const OpQueue&) = delete;
  OpQueue& operator=(const OpQueue&) = delete;

  // Runs the op on the worker, then completes its work with its outputs or its error.
  void enqueue(QueuedOp op);

  // Blocks until everything enqueued so far has completed, transfers included.
  void drain();

  // Runs the op of `work` on the calling thread, as the worker would (its check, its
  // body), if it is the only op queued and the worker is idle; returns whether it did.
  // The worker leaves the queue alone meanwhile, so the group's order is kept.
  bool runOnCaller(const FutureWork& work);

  // What a Work's wait() reaches: this queue until stop(), then nothing (a work may be
  // waited on after its group is gone). Held while a caller runs an op, so stop() waits
  // for it as it waits for the worker.
  struct CallerRuns {
    explicit CallerRuns(OpQueue* queue) : queue(queue) {}
    std::mutex mutex;
    OpQueue* queue;
  };
  const std::shared_ptr<CallerRuns>& callerRuns() const {
    return callerRuns_;
  }

  // Fails every op not yet completed with `reason`; the worker ends once the op it runs
  // returns. Later enqueue() calls fail their work at once. Returns at once: safe from any
  // thread, the worker's own and the OnFailure callback included.
  void fail(const std::exception_ptr& reason);
  // fail(), then waits for the worker and watchdog threads to end.
  void stop(const std::exception_ptr& reason);

 private:
  // Ops whose transfer is on the wire, with the time they fail at if still there.
  // Shared with the completion callbacks, which Gloo runs on its own threads, possibly
  // after this queue is gone.
  struct InFlight {
    struct Entry {
      c10::intrusive_ptr<FutureWork> work;
      std::chrono::steady_clock::time_point deadline;
      std::chrono::milliseconds timeout;
      std::vector<at::Tensor> touches;  // held, so that no storage is reused meanwhile
    };
    std::mutex mutex;
    std::condition_variable cv;  // an entry left: for drain() and ops waiting on a tensor
    std::list<Entry> entries;
    // Failed on the wire (its deadline, its transfer's error), being failed now: still
    // holds its tensors (later ops wait), but fail() leaves it its own error.
    std::list<Entry> settling;
    std::exception_ptr stopped;  // set by stop(): a transfer started after it fails with it
    // The watchdog sleeps until the earliest deadline; it is woken only when a new entry
    // ends sooner than that (rarely: every entry gets the group's timeout), not on
    // every call, which on few cores costs as much as a small call itself.
    std::condition_variable watchdogCv;
    std::chrono::steady_clock::time_point watchdogWakes = std::chrono::steady_clock::time_point::max();
    // The queue's OnFailure, kept here so that completion callbacks that run after the
    // queue is gone find it cleared (stop() clears it) instead of calling into a dead
    // process group. Its own mutex: the callback may call fail(), which takes `mutex`.
    std::mutex onFailureMutex;
    OnFailure onFailure;
    void tellFailure(const std::string& name, const std::exception_ptr& error);
    // Fails each work (moved from `entries` into `settling` under `mutex`, which the
    // caller no longer holds) with its error, telling onFailure first, then lets later
    // ops touching their tensors go on.
    using Failing = std::vector<std::pair<c10::intrusive_ptr<FutureWork>, std::exception_ptr>>;
    void failSettling(const Failing& failing);
  };

  void loop();
  // Checks and runs the oldest queued ops (up to a check's worth); `lock` holds mutex_ on
  // entry and on return, and running_ is set by the caller.
  void runBatch(std::unique_lock<std::mutex>& lock);
  // Fails transfers still on the wire at their deadline (an inner backend that never
  // completes its work must not hang the caller).
  void watch();
  void run(QueuedOp& op, const std::exception_ptr& refused);
  void runJointly(std::vector<QueuedOp>& ops);
  // Tells onFailure_ of `error`, then fails `work` with it.
  void failRunning(const c10::intrusive_ptr<FutureWork>& work, const std::exception_ptr& error);
  void completeLater(const c10::intrusive_ptr<FutureWork>& work, StartedTransfer started, std::vector<at::Tensor> touches);
  // Blocks until no transfer on the wire shares a storage with `tensors` (or stop()).
  void awaitTransfersTouching(const std::vector<at::Tensor>& tensors);

  const int rank_;
  const Admit admit_;
  const RunJointly runJointly_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<QueuedOp> ops_;
  // Ops the check let through, not started yet, each with what fails it (null: run it).
  struct Admitted {
    QueuedOp op;
    std::exception_ptr refused;
  };
  std::deque<Admitted> admitted_;
  bool running_ = false;  // the worker is running a batch right now
  std::exception_ptr stopped_;
  std::shared_ptr<InFlight> inFlight_ = std::make_shared<InFlight>();
  std::shared_ptr<CallerRuns> callerRuns_ = std::make_shared<CallerRuns>(this);
  std::thread worker_;
  std::thread watchdog_;
};

// The Work of a queued op: a wait() without a timeout first offers to run the op on the
// waiting thread (OpQueue::runOnCaller), then waits as any FutureWork.
class QueuedWork : public FutureWork {
 public:
  template <typename... FutureWorkArgs>
  explicit QueuedWork(const OpQueue& queue, FutureWorkArgs&&... args)
      : FutureWork(std::forward<FutureWorkArgs>(args)...), queue_(queue.callerRuns()) {}

  bool wait(std::chrono::milliseconds timeout) override;

 private:
  std::weak_ptr<OpQueue::CallerRuns> queue_;
};

} // namespace qccl
