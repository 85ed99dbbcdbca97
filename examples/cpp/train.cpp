// Data-parallel training from C++ with qccl: every process trains the same small model
// on its own shard of a synthetic regression task and averages gradients with qccl's
// compressed allreduce (int8 unless QCCL_CODEC says otherwise). Build and run:
// examples/README.md, "cpp/"; the API: docs/guide/cpp.md.
//
// Environment (what torchrun sets; a shell loop can set it too):
//   RANK, WORLD_SIZE              this process's rank and the number of processes
//   MASTER_ADDR, MASTER_PORT      the TCPStore (rank 0 hosts it; default 127.0.0.1:29500)
//   TORCHELASTIC_USE_AGENT_STORE  "True" under torchrun: its agent already hosts the store
//   TRAIN_STEPS                   optimizer steps (default 200)

#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <string>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>

#include <qccl/qccl.h>

namespace {

std::string env(const char* name, const std::string& fallback = "") {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    if (fallback.empty()) {
      throw std::runtime_error(std::string(name) + " is not set (see the comment at the top of train.cpp)");
    }
    return fallback;
  }
  return value;
}

c10::intrusive_ptr<c10d::Store> connectStore(int rank, int worldSize) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(std::stoi(env("MASTER_PORT", "29500")));
  options.isServer = rank == 0 && env("TORCHELASTIC_USE_AGENT_STORE", "False") != "True";
  options.numWorkers = worldSize;
  options.timeout = std::chrono::seconds(60);
  return c10::make_intrusive<c10d::TCPStore>(env("MASTER_ADDR", "127.0.0.1"), options);
}

// The same network on every rank: one seed for the initial weights, and a broadcast from
// rank 0 that makes sure of it, as DDP does.
torch::nn::Sequential makeModel(c10d::Backend& group) {
  torch::manual_seed(0);
  torch::nn::Sequential model(
      torch::nn::Linear(64, 256), torch::nn::ReLU(),
      torch::nn::Linear(256, 256), torch::nn::ReLU(),
      torch::nn::Linear(256, 1));
  std::vector<at::Tensor> parameters;
  for (auto& p : model->parameters()) {
    parameters.push_back(p.data());
  }
  for (auto& p : parameters) {
    std::vector<at::Tensor> one{p};
    group.broadcast(one)->wait();
  }
  return model;
}

// Each rank's shard: inputs of its own seed, labels from one shared linear teacher.
std::pair<at::Tensor, at::Tensor> makeShard(int rank) {
  torch::manual_seed(1000);
  auto teacher = torch::randn({64, 1});
  torch::manual_seed(1 + rank);
  auto x = torch::randn({256, 64});
  auto y = x.matmul(teacher) + 0.01 * torch::randn({256, 1});
  return {x, y};
}

// A digest of the parameters' exact bits: equal on every rank when training is.
uint64_t parameterDigest(torch::nn::Sequential& model) {
  uint64_t digest = 1469598103934665603ull;  // FNV-1a
  for (auto& p : model->parameters()) {
    auto bytes = p.detach().contiguous().view(torch::kUInt8);
    const auto* data = bytes.data_ptr<uint8_t>();
    for (int64_t i = 0; i < bytes.numel(); ++i) {
      digest = (digest ^ data[i]) * 1099511628211ull;
    }
  }
  return digest;
}

} // namespace

int train() {
  const int rank = std::stoi(env("RANK"));
  const int worldSize = std::stoi(env("WORLD_SIZE"));
  const int steps = std::stoi(env("TRAIN_STEPS", "200"));

  qccl::Options options;
  options.timeout = std::chrono::seconds(60);
  if (std::getenv("QCCL_CODEC") == nullptr) {
    options.codec = qccl::codecs::kInt8;  // a field set in code wins over the environment
  }
  auto group = qccl::createBackend(connectStore(rank, worldSize), rank, worldSize, options);
  if (rank == 0) {
    std::cout << "qccl: " << worldSize << " ranks, codec " << options.resolved().at("codec") << std::endl;
  }

  auto model = makeModel(*group);
  auto [x, y] = makeShard(rank);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  c10d::AllreduceCoalescedOptions average;
  average.reduceOp = c10d::ReduceOp::AVG;

  double firstLoss = 0;
  double loss = 0;
  for (int step = 0; step < steps; ++step) {
    optimizer.zero_grad();
    auto batchLoss = torch::mse_loss(model->forward(x), y);
    batchLoss.backward();
    std::vector<at::Tensor> grads;
    for (auto& p : model->parameters()) {
      grads.push_back(p.grad());
    }
    group->allreduce_coalesced(grads, average)->wait();  // fused into one bucket, then compressed
    optimizer.step();

    loss = batchLoss.item<double>();
    if (step == 0) {
      firstLoss = loss;
    }
    if (rank == 0 && (step % 50 == 0 || step == steps - 1)) {
      std::cout << "step " << step << " loss " << loss << std::endl;
    }
  }
  std::cout << "rank " << rank << " first_loss " << firstLoss << " final_loss " << loss << " digest " << std::hex
            << parameterDigest(model) << std::dec << std::endl;
  group->shutdown();
  return 0;
}

int main() {
  try {
    return train();
  } catch (const std::exception& error) {
    std::cerr << "train: " << error.what() << std::endl;
    return 1;
  }
}
