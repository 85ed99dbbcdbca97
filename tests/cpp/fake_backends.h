#pragma once

// Stand-ins for the Gloo transport in single-process tests.
//
// LoopbackBackend: a world of one rank. Every collective is what Gloo does at world size
// 1 (outputs receive the inputs), so qccl's whole path runs without a network.
// StuckBackend: every collective returns a work that never completes, like a peer that
// hangs; used for timeouts and abort.

#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>

namespace qccl::testing {

inline c10::intrusive_ptr<c10::ivalue::Future> newFuture() {
  return c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()));
}

inline c10::intrusive_ptr<c10d::Work> done() {
  auto future = newFuture();
  future->markCompleted(c10::IValue(std::vector<at::Tensor>{}));
  return c10d::Work::create_from_future(future);
}

class LoopbackBackend : public c10d::Backend {
 public:
  LoopbackBackend() : Backend(0, 1) {}
  const std::string getBackendName() const override { return "loopback"; }

  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>&, const c10d::BroadcastOptions&) override { return done(); }
  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>&, const c10d::AllreduceOptions&) override { return done(); }
  c10::intrusive_ptr<c10d::Work> reduce(std::vector<at::Tensor>&, const c10d::ReduceOptions&) override { return done(); }
  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions&) override { return done(); }
  c10::intrusive_ptr<c10d::Work> _allgather_base(at::Tensor& out, at::Tensor& in, const c10d::AllgatherOptions&) override {
    out.copy_(in);
    return done();
  }
  c10::intrusive_ptr<c10d::Work> _reduce_scatter_base(at::Tensor& out, at::Tensor& in, const c10d::ReduceScatterOptions&) override {
    out.copy_(in);
    return done();
  }
  c10::intrusive_ptr<c10d::Work> alltoall_base(at::Tensor& out, at::Tensor& in, std::vector<int64_t>&, std::vector<int64_t>&, const c10d::AllToAllOptions&) override {
    out.copy_(in);
    return done();
  }
  c10::intrusive_ptr<c10d::Work> gather(std::vector<std::vector<at::Tensor>>& outs, std::vector<at::Tensor>& ins, const c10d::GatherOptions&) override {
    outs.at(0).at(0).copy_(ins.at(0));
    return done();
  }
  c10::intrusive_ptr<c10d::Work> scatter(std::vector<at::Tensor>& outs, std::vector<std::vector<at::Tensor>>& ins, const c10d::ScatterOptions&) override {
    outs.at(0).copy_(ins.at(0).at(0));
    return done();
  }
};

class StuckBackend : public LoopbackBackend {
 public:
  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>&, const c10d::AllreduceOptions&) override {
    return c10d::Work::create_from_future(newFuture());  // never completes
  }
};

} // namespace qccl::testing
