#pragma once

// Fusion planning: which tensors of a list are reduced together. A pure function of the
// tensors' sizes, their groups and the cap, so every rank that passes the same list gets
// the same plan, and the same message sizes.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace qccl::bucket {

struct Item {
  int64_t bytes = 0;
  int64_t group = 0;  // only items of one group share a bucket (e.g. one dtype)
};

struct Bucket {
  int64_t group = 0;
  int64_t bytes = 0;
  std::vector<size_t> items;  // indices into the planned list, in list order
};

// Packs items in list order into buckets of at most `capBytes` per group; an item larger
// than the cap gets a bucket of its own (the algorithm chunks it). Buckets come out in
// the order they are closed, then the open ones in order of their first item.
std::vector<Bucket> planBuckets(const std::vector<Item>& items, int64_t capBytes);

} // namespace qccl::bucket
