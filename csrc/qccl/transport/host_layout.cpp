#include "qccl/transport/host_layout.h"

#include "qccl/transport/shm/host_identity.h"

namespace qccl {

HostLayout HostLayout::share(c10d::Store& store, int rank, int size) {
  const std::string key = "qccl_hosts/";
  const auto mine = shm::hostIdentity();
  store.set(key + std::to_string(rank), std::vector<uint8_t>(mine.begin(), mine.end()));
  std::vector<std::string> hosts;
  for (int r = 0; r < size; ++r) {
    const auto bytes = r == rank ? std::vector<uint8_t>(mine.begin(), mine.end()) : store.get(key + std::to_string(r));
    hosts.emplace_back(bytes.begin(), bytes.end());
  }
  return HostLayout(std::move(hosts));
}

bool HostLayout::shareAHost(int first, int count) const {
  for (int r = first + 1; r < first + count; ++r) {
    if (hostOfRank_[r] != hostOfRank_[first]) {
      return false;
    }
  }
  return true;
}

int HostLayout::ranksPerNode() const {
  const int size = static_cast<int>(hostOfRank_.size());
  int run = 1;
  while (run < size && hostOfRank_[run] == hostOfRank_[0]) {
    ++run;
  }
  if (run == 1 || run == size || size % run != 0) {
    return 1;
  }
  for (int first = 0; first < size; first += run) {
    if (!shareAHost(first, run)) {
      return 1;
    }
    for (int earlier = 0; earlier < first; earlier += run) {
      if (hostOfRank_[earlier] == hostOfRank_[first]) {  // a host seen again: not one node
        return 1;
      }
    }
  }
  return run;
}

} // namespace qccl
