#include "qccl/algo/collectives.h"

#include <ATen/ops/empty.h>

#include "qccl/algo/one_host.h"
#include "qccl/common/tensor_bytes.h"

namespace qccl::algo {
namespace {

std::vector<at::Tensor> bytesOf(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> views;
  views.reserve(tensors.size());
  for (const auto& t : tensors) {
    views.push_back(asBytes(t));
  }
  return views;
}

at::Tensor emptyBytes(int64_t n) {
  return at::empty({n}, at::TensorOptions().dtype(at::kByte));
}

// A transfer with nothing left to do once Gloo has delivered it.
StartedTransfer started(GlooTransport& net, c10::intrusive_ptr<c10d::Work> work) {
  return {std::move(work), [] {}, net.timeout()};
}

} // namespace

StartedTransfer broadcast(GlooTransport& net, at::Tensor& tensor, int64_t root) {
  std::vector<at::Tensor> bytes{asBytes(tensor)};
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  return started(net, net.gloo().broadcast(bytes, opts));
}

StartedTransfer allgatherIntoTensor(GlooTransport& net, at::Tensor& output, const at::Tensor& input) {
  auto out = asBytes(output);
  auto in = asBytes(input.contiguous());
  return started(net, net.gloo()._allgather_base(out, in, c10d::AllgatherOptions()));
}

// Gathers every rank's `packed` bytes into `gathered` in rank order, then runs `unpack`:
// through shared memory when the group has it (done on return), else over Gloo.
std::optional<StartedTransfer> gatherPacked(
    GlooTransport& net,
    OneHost* oneHost,
    at::Tensor gathered,
    const at::Tensor& packed,
    std::function<void()> unpack) {
  if (oneHost) {
    oneHost->allgatherIntoTensor(gathered, packed);
    unpack();
    return std::nullopt;
  }
  return allgatherIntoTensor(net, gathered, packed).andThen(std::move(unpack));
}

std::optional<StartedTransfer> allgatherCoalesced(
    GlooTransport& net,
    std::vector<std::vector<at::Tensor>>& outputLists,
    const std::vector<at::Tensor>& inputs,
    OneHost* oneHost) {
  auto packed = concatBytes(inputs);
  auto gathered = emptyBytes(packed.numel() * net.size());
  return gatherPacked(net, oneHost, gathered, packed, [gathered, outputLists]() mutable {
    int64_t offset = 0;
    for (auto& perRank : outputLists) {
      offset = splitBytesInto(gathered, perRank, offset);
    }
  });
}

std::optional<StartedTransfer> allgatherIntoTensorCoalesced(
    GlooTransport& net,
    std::vector<at::Tensor>& outputs,
    const std::vector<at::Tensor>& inputs,
    OneHost* oneHost) {
  // One collective for all pairs: rank r's packed inputs land in block r, and block r's
  // i-th piece belongs to the r-th slot of outputs[i].
  auto packed = concatBytes(inputs);
  auto gathered = emptyBytes(packed.numel() * net.size());
  std::vector<int64_t> inputBytes;
  for (const auto& t : inputs) {
    inputBytes.push_back(byteSize(t));
  }
  return gatherPacked(net, oneHost, gathered, packed, [gathered, outputs, inputBytes, ranks = net.size()]() {
    int64_t offset = 0;
    for (int r = 0; r < ranks; ++r) {
      for (size_t i = 0; i < inputBytes.size(); ++i) {
        const int64_t n = inputBytes[i];
        asBytes(outputs[i]).narrow(0, r * n, n).copy_(gathered.narrow(0, offset, n));
        offset += n;
      }
    }
  });
}

StartedTransfer gather(GlooTransport& net, std::vector<at::Tensor>& outputs, const at::Tensor& input, int64_t root) {
  std::vector<std::vector<at::Tensor>> out;
  if (net.rank() == root) {
    out.push_back(bytesOf(outputs));
  }
  std::vector<at::Tensor> in{asBytes(input.contiguous())};
  c10d::GatherOptions opts;
  opts.rootRank = root;
  return started(net, net.gloo().gather(out, in, opts));
}

StartedTransfer scatter(GlooTransport& net, at::Tensor& output, const std::vector<at::Tensor>& inputs, int64_t root) {
  std::vector<std::vector<at::Tensor>> in;
  if (net.rank() == root) {
    std::vector<at::Tensor> contiguous;
    for (const auto& t : inputs) {
      contiguous.push_back(t.contiguous());
    }
    in.push_back(bytesOf(contiguous));
  }
  std::vector<at::Tensor> out{asBytes(output)};
  c10d::ScatterOptions opts;
  opts.rootRank = root;
  return started(net, net.gloo().scatter(out, in, opts));
}

std::optional<StartedTransfer> alltoallSingle(
    GlooTransport& net,
    at::Tensor& output,
    const at::Tensor& input,
    const std::vector<int64_t>& outputSplits,
    const std::vector<int64_t>& inputSplits,
    OneHost* oneHost) {
  auto out = asBytes(output);
  auto in = asBytes(input.contiguous());
  auto outBytes = splitBytes(output, outputSplits, net.size());
  auto inBytes = splitBytes(input, inputSplits, net.size());
  if (oneHost) {
    oneHost->allToAll(out, outBytes, in, inBytes);
    return std::nullopt;
  }
  return started(net, net.gloo().alltoall_base(out, in, outBytes, inBytes, c10d::AllToAllOptions()));
}

std::optional<StartedTransfer> alltoall(
    GlooTransport& net,
    std::vector<at::Tensor>& outputs,
    const std::vector<at::Tensor>& inputs,
    OneHost* oneHost) {
  auto packedIn = concatBytes(inputs);
  std::vector<int64_t> inBytes;
  std::vector<int64_t> outBytes;
  int64_t outTotal = 0;
  for (const auto& t : inputs) {
    inBytes.push_back(byteSize(t));
  }
  for (const auto& t : outputs) {
    outBytes.push_back(byteSize(t));
    outTotal += outBytes.back();
  }
  auto packedOut = emptyBytes(outTotal);
  if (oneHost) {
    oneHost->allToAll(packedOut, outBytes, packedIn, inBytes);
    splitBytesInto(packedOut, outputs);
    return std::nullopt;
  }
  return started(net, net.gloo().alltoall_base(packedOut, packedIn, outBytes, inBytes, c10d::AllToAllOptions()))
      .andThen([packedOut, outputs]() mutable { splitBytesInto(packedOut, outputs); });
}

StartedTransfer barrier(GlooTransport& net) {
  return started(net, net.gloo().barrier(c10d::BarrierOptions()));
}

} // namespace qccl::algo
