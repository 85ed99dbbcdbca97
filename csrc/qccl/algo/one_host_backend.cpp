#include "qccl/algo/one_host_backend.h"

#include "qccl/algo/one_host.h"
#include "qccl/common/tensor_bytes.h"
#include "qccl/work/work.h"

namespace qccl::algo {
namespace {

c10::intrusive_ptr<c10d::Work> done(int rank, c10d::OpType type, const char* name, const at::Tensor& output) {
  auto work = c10::make_intrusive<FutureWork>(rank, type, name, std::vector<at::Tensor>{output});
  work->markSucceeded();
  return work;
}

} // namespace

OneHostBackend::OneHostBackend(OneHost& oneHost) : Backend(oneHost.rank(), oneHost.size()), oneHost_(oneHost) {}

c10::intrusive_ptr<c10d::Work> OneHostBackend::alltoall_base(
    at::Tensor& output,
    at::Tensor& input,
    std::vector<int64_t>& outputSplits,
    std::vector<int64_t>& inputSplits,
    const c10d::AllToAllOptions&) {
  auto out = asBytes(output);
  oneHost_.allToAll(out, splitBytes(output, outputSplits, size_), asBytes(input.contiguous()),
                    splitBytes(input, inputSplits, size_));
  return done(rank_, c10d::OpType::ALLTOALL_BASE, "all_to_all_single", output);
}

c10::intrusive_ptr<c10d::Work> OneHostBackend::_allgather_base(
    at::Tensor& output,
    at::Tensor& input,
    const c10d::AllgatherOptions&) {
  oneHost_.allgatherIntoTensor(output, input);
  return done(rank_, c10d::OpType::_ALLGATHER_BASE, "all_gather_into_tensor", output);
}

} // namespace qccl::algo
