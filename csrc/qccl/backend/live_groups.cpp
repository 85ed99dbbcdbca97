#include "qccl/backend/live_groups.h"

#include <algorithm>
#include <mutex>
#include <vector>

#include "qccl/backend/process_group_qccl.h"

namespace qccl {
namespace {

std::mutex liveGroupsMutex;
std::vector<c10::weak_intrusive_ptr<ProcessGroupQCCL>> liveGroups;  // under liveGroupsMutex

} // namespace

void rememberLiveGroup(const c10::intrusive_ptr<ProcessGroupQCCL>& group) {
  std::lock_guard<std::mutex> lock(liveGroupsMutex);
  std::erase_if(liveGroups, [](const auto& weak) { return weak.expired(); });
  liveGroups.emplace_back(group);
}

void closeEveryLiveGroup() {
  std::vector<c10::intrusive_ptr<ProcessGroupQCCL>> alive;
  {
    std::lock_guard<std::mutex> lock(liveGroupsMutex);
    for (auto& weak : liveGroups) {
      if (auto group = weak.lock()) {
        alive.push_back(std::move(group));
      }
    }
    liveGroups.clear();
  }
  for (auto& group : alive) {  // outside the lock: stopping joins threads
    group->closeAtExit();
  }
}

} // namespace qccl
