#pragma once

// Every qccl group of this process that may still be alive, however it was made (torch's
// creator, split, shrink), so that the Python interpreter's exit can stop their threads
// while Python is still whole (python/qccl/_exit.py says why).

#include <c10/util/intrusive_ptr.h>

namespace qccl {

class ProcessGroupQCCL;

void rememberLiveGroup(const c10::intrusive_ptr<ProcessGroupQCCL>& group);
// Calls closeAtExit() on every group still alive and forgets them all.
void closeEveryLiveGroup();

} // namespace qccl
