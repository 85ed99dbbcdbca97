#include "qccl/backend/joint_allreduce.h"

#include <algorithm>

namespace qccl {

void markRunStarts(const std::vector<const QueuedOp*>& batch, std::vector<OpSignature>& signatures) {
  // The batch's calls hold their tensors, so no storage here can be freed and another
  // allocated at its address meanwhile.
  std::vector<const void*> earlier;
  for (size_t i = 0; i < batch.size(); ++i) {
    auto* joinable = dynamic_cast<JoinableAllreduce*>(batch[i]->joinable.get());
    if (joinable == nullptr) {
      continue;
    }
    bool touches = false;
    std::vector<const void*> storages;
    for (const auto& t : joinable->call().tensors) {
      storages.push_back(t.storage().unsafeGetStorageImpl());
      touches = touches || std::find(earlier.begin(), earlier.end(), storages.back()) != earlier.end();
    }
    earlier.insert(earlier.end(), storages.begin(), storages.end());
    signatures[i].startsRun = touches;
  }
}

void applyRunStarts(const std::vector<const QueuedOp*>& batch, const std::vector<bool>& startsRun) {
  for (size_t i = 0; i < startsRun.size(); ++i) {
    if (auto* joinable = dynamic_cast<JoinableAllreduce*>(batch[i]->joinable.get())) {
      joinable->setStartsRun(startsRun[i]);
    }
  }
}

} // namespace qccl
