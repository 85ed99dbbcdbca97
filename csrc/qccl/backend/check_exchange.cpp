#include "qccl/backend/check_exchange.h"

#include <chrono>
#include <vector>

#include <ATen/ops/empty.h>

#include "qccl/p2p/message.h"

namespace qccl {

at::Tensor exchangeCheckParts(
    p2p::P2PEngine& p2p,
    GlooTransport& net,
    const at::Tensor& mine,
    const std::string& what,
    std::vector<int64_t>& waitedNs) {
  const int rank = net.rank();
  const int size = net.size();
  auto all = at::empty({size, mine.numel()}, mine.options());
  all[rank].copy_(mine);
  std::vector<c10::intrusive_ptr<c10d::Work>> receives(size);
  std::vector<c10::intrusive_ptr<c10d::Work>> sends;
  for (int peer = 0; peer < size; ++peer) {
    if (peer != rank) {
      receives[peer] = p2p.recv(all[peer], peer, p2p::kCheckTag);
      sends.push_back(p2p.send(mine, peer, p2p::kCheckTag));
    }
  }
  for (int peer = 0; peer < size; ++peer) {
    if (receives[peer] && !receives[peer]->isCompleted()) {
      const auto start = std::chrono::steady_clock::now();
      net.waitFor(receives[peer], what);
      waitedNs[peer] +=
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
    }
  }
  for (const auto& work : sends) {
    net.waitFor(work, what);
  }
  return all.view({-1});
}

} // namespace qccl
