#pragma once

// One POSIX shared-memory segment, mapped read-write, owned by this object (RAII).
//
// Hygiene (issue 28): names are /qccl-<pid>-<64 random bits>, created O_EXCL with mode
// 0600, so no other user can open or guess them; the creator unlinks the name as soon as
// every peer has mapped it (Channel::unlinkOwn), after which nothing is left in /dev/shm
// however the processes end, SIGKILL included. The memory is reserved up front with
// posix_fallocate: a tmpfs that is too small then fails here, with SegmentTooLarge, and
// never later as a SIGBUS on first write (what ftruncate alone leads to).

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace qccl::shm {

// /dev/shm cannot hold a segment. The caller's cue to warn once and fall back to sockets;
// what() names both sizes.
class SegmentTooLarge : public std::runtime_error {
 public:
  SegmentTooLarge(uint64_t neededBytes, uint64_t freeBytes);
  uint64_t neededBytes() const {
    return neededBytes_;
  }
  uint64_t freeBytes() const {
    return freeBytes_;
  }

 private:
  uint64_t neededBytes_;
  uint64_t freeBytes_;
};

// Bytes an unprivileged process may still allocate in /dev/shm (statvfs); nullopt when
// the file system sets no limit or cannot say.
std::optional<uint64_t> shmFreeBytes();

// Throws SegmentTooLarge unless `neededBytes` fits in `freeBytes` (nullopt: no limit).
void checkSegmentFits(uint64_t neededBytes, std::optional<uint64_t> freeBytes);

class Segment {
 public:
  // A new segment of `bytes` (zero-filled), named for this process. `assumeFreeBytes`
  // replaces the statvfs reading (tests use it to reach posix_fallocate's own ENOSPC).
  // Throws SegmentTooLarge when /dev/shm cannot hold it, DistBackendError on other
  // system errors.
  static Segment create(uint64_t bytes, std::optional<uint64_t> assumeFreeBytes = std::nullopt);

  // Maps the segment another process created as `name`; it must be exactly `bytes` long
  // and belong to this user. Throws DistBackendError otherwise.
  static Segment open(const std::string& name, uint64_t bytes);

  Segment() = default; // maps nothing
  Segment(Segment&& other) noexcept;
  Segment& operator=(Segment&& other) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment(); // unmaps; a created segment whose name is still linked is unlinked too

  // Removes the name from /dev/shm (created segments only; later calls do nothing). The
  // mappings stay valid in every process that has one.
  void unlink();

  uint8_t* data() const {
    return data_;
  }
  uint64_t bytes() const {
    return bytes_;
  }
  const std::string& name() const {
    return name_;
  }
  bool linked() const {
    return owner_ && !unlinked_;
  }

 private:
  Segment(std::string name, uint8_t* data, uint64_t bytes, bool owner);
  void release() noexcept;

  std::string name_;
  uint8_t* data_ = nullptr;
  uint64_t bytes_ = 0;
  bool owner_ = false;
  bool unlinked_ = false;
};

} // namespace qccl::shm
