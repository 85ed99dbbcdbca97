#include "qccl/bucket/bucket_plan.h"

#include <map>

namespace qccl::bucket {

std::vector<Bucket> planBuckets(const std::vector<Item>& items, int64_t capBytes) {
  std::vector<Bucket> closed;
  std::vector<Bucket> open;            // one per group, in order of first item
  std::map<int64_t, size_t> openSlot;  // group -> index in `open`
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& item = items[i];
    auto slot = openSlot.find(item.group);
    if (slot == openSlot.end()) {
      slot = openSlot.emplace(item.group, open.size()).first;
      open.push_back(Bucket{item.group, 0, {}});
    }
    Bucket& bucket = open[slot->second];
    if (!bucket.items.empty() && bucket.bytes + item.bytes > capBytes) {
      closed.push_back(std::move(bucket));
      bucket = Bucket{item.group, 0, {}};
    }
    bucket.items.push_back(i);
    bucket.bytes += item.bytes;
  }
  for (auto& bucket : open) {
    if (!bucket.items.empty()) {
      closed.push_back(std::move(bucket));
    }
  }
  return closed;
}

} // namespace qccl::bucket
