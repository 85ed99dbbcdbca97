#include "qccl/backend/check_exchange.h"

#include <vector>

#include <ATen/ops/empty.h>

#include "qccl/p2p/message.h"

namespace qccl {

at::Tensor exchangeCheckParts(
    p2p::P2PEngine& p2p,
    GlooTransport& net,
    const at::Tensor& mine,
    const std::string& what) {
  const int rank = net.rank();
  const int size = net.size();
  auto all = at::empty({size, mine.numel()}, mine.options());
  all[rank].copy_(mine);
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (int peer = 0; peer < size; ++peer) {
    if (peer != rank) {
      works.push_back(p2p.recv(all[peer], peer, p2p::kCheckTag));
      works.push_back(p2p.send(mine, peer, p2p::kCheckTag));
    }
  }
  for (const auto& work : works) {
    net.waitFor(work, what);
  }
  return all.view({-1});
}

} // namespace qccl
