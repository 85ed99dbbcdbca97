#include "qccl/p2p/host_outbox.h"

#include "qccl/common/errors.h"

namespace qccl::p2p {

HostOutbox::HostOutbox(shm::Mailbox& mailbox, int rank, int peer, std::chrono::milliseconds timeout)
    : mailbox_(mailbox), rank_(rank), peer_(peer), timeout_(timeout) {}

HostOutbox::~HostOutbox() {
  stop();
}

void HostOutbox::write(const Header& header, const at::Tensor& payload) {
  mailbox_.write(peer_, &header, sizeof(Header), timeout_);
  if (header.payloadBytes > 0) {
    mailbox_.write(peer_, payload.const_data_ptr(), static_cast<uint64_t>(header.payloadBytes), timeout_);
  }
}

c10::intrusive_ptr<FutureWork> HostOutbox::post(const Header& header, const at::Tensor& payload) {
  std::unique_lock<std::mutex> lock(mutex_);
  TORCH_CHECK(!stopping_, "the process group is shutting down");
  if (queue_.empty() && !writing_ && header.payloadBytes <= kInlineBytes) {
    write(header, payload);  // small: waits for room at most briefly, the reader drains
    return nullptr;
  }
  auto written = c10::make_intrusive<FutureWork>(
      rank_, c10d::OpType::SEND, "write of a point-to-point message to rank " + std::to_string(peer_),
      std::vector<at::Tensor>{});
  queue_.push_back({header, payload, written});
  if (!thread_.joinable()) {
    thread_ = std::thread([this] { run(); });
  }
  cv_.notify_all();
  return written;
}

void HostOutbox::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) {
      return;  // stop() fails what is left
    }
    Queued next = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    lock.unlock();
    try {
      write(next.header, next.payload);
      next.written->markSucceeded();
    } catch (...) {
      next.written->markFailed(std::current_exception());
    }
    next = Queued{};
    lock.lock();
    writing_ = false;
  }
}

void HostOutbox::stop() {
  std::deque<Queued> abandoned;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    abandoned.swap(queue_);
    cv_.notify_all();
  }
  if (thread_.joinable()) {
    thread_.join();
  }
  for (auto& queued : abandoned) {
    queued.written->markFailed(makeCommError("a send to rank " + std::to_string(peer_) + " on rank " +
                                             std::to_string(rank_) + ": the process group was shut down"));
  }
}

} // namespace qccl::p2p
