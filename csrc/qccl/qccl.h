#pragma once

// Public (installed as include/qccl/qccl.h): qccl for C++ (LibTorch) programs.
//
//   auto store = c10::make_intrusive<c10d::FileStore>(path, worldSize);
//   auto pg = qccl::createBackend(store, rank, worldSize, qccl::Options{.codec = "int8"});
//   std::vector<at::Tensor> grads{...};
//   pg->allreduce(grads)->wait();
//
// The backend is a c10d::Backend: every collective and point-to-point op of
// torch.distributed, with the same semantics as in Python (README, docs/).

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "qccl/codec_names.h"
#include "qccl/options.h"

namespace qccl {

inline constexpr const char* kBackendName = "qccl";

// A qccl group of `size` ranks; every rank calls it with the same store and options.
// The store is the group's own (another group needs another store, or a PrefixStore).
// It connects to the peers before returning (CPU tensors travel through Gloo on
// `store`, under the prefix "qccl/<n>/gloo/", n agreed by the ranks and new for every
// call on that store, so a job restarted with the same store never meets the previous
// attempt's keys; each rank also leaves its point-to-point settings under
// "qccl/<n>/p2p_settings/"). Raises c10::ValueError for invalid options and
// c10::DistBackendError when the peers cannot be reached within options.timeout.
//
// CUDA tensors travel through `nccl`, a c10d::ProcessGroupNCCL you create on the same
// store under the prefix "qccl/nccl/" (from C++ qccl does not create one itself; a
// restarted job must give it a prefix of the attempt's own), or, with cudaTransport =
// "gloo", are staged through host memory. Without either, the first CUDA op raises,
// naming these two fixes.
c10::intrusive_ptr<c10d::Backend> createBackend(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int size,
    const Options& options = {},
    c10::intrusive_ptr<c10d::Backend> nccl = {});

// Whether this build contains qccl's CUDA code (the CUDA flavour).
bool hasCuda();

} // namespace qccl
