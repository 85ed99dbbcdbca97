#pragma once

// The steps every compressed collective's chunk pipeline shares (compressed_allreduce.cpp,
// compressed_sharded.cpp): seeding the encoders, encoding with error feedback, waiting
// for a transfer, and the staggered schedule that keeps several chunks on the wire while
// the worker encodes and decodes others.

#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include "qccl/codec/codec.h"
#include "qccl/transport/transport.h"

namespace qccl::algo {

// Chunks whose transfers are on the wire at once, per stage: enough for
// kElementsInFlight elements, within these bounds (each transfer holds one of the inner
// Gloo's threads, transport/gloo_factory.h, while it is on the wire).
constexpr int64_t kElementsInFlight = int64_t{6} << 20;
constexpr int64_t kMinChunksInFlight = 6;
constexpr int64_t kMaxChunksInFlight = 15;

// The pipeline depth for chunks of at most `largestChunk` elements: depends only on the
// chunk sizes, so every rank picks the same.
int64_t chunksInFlight(int64_t largestChunk);

// Runs stage s of item i at step i + s * depth, for every item below `count`, in step
// order (within a step, the earlier stage first): `depth` items wait between two stages
// (their transfers on the wire) while the worker runs the others. Every rank runs the
// same sequence, so their collectives pair up.
void runStaggered(int64_t count, int64_t depth, const std::vector<std::function<void(int64_t item)>>& stages);

// runStaggered for pairwise pipelines: item i's receives (postReceives) are posted `depth`
// steps before its first stage runs (the first `depth` items' at once), so every send
// meets a receive posted ahead (Transport::postsReceivesAhead).
void runWithReceivesAhead(
    int64_t count,
    int64_t depth,
    const std::function<void(int64_t item)>& postReceives,
    const std::vector<std::function<void(int64_t item)>>& stages);

// A different random stream for every (call, chunk, rank, stage).
uint64_t streamSeed(uint64_t seed, int64_t chunk, int rank, int stage);

// Wire bytes on `like`'s device.
at::Tensor emptyBytes(int64_t n, const at::Tensor& like);

// Encodes `values` (contiguous float32) to `out`. With `residual` defined (float32,
// contiguous, as many elements): adds it to `values` first, and replaces it by what the
// encoder dropped (error feedback). `values` may be changed either way.
void encodeWithFeedback(
    const codec::Codec& codec,
    at::Tensor values,
    at::Tensor residual,
    uint8_t* out,
    const codec::EncodeOptions& options);

// Waits for `work` (none with one rank, or already waited for), then lets go of it and of
// the bytes it sent; the wait counts as transfer time.
void awaitTransfer(
    Transport& net,
    c10::intrusive_ptr<c10d::Work>& work,
    at::Tensor& sent,
    const char* what,
    double& transferSeconds);
// The same for every part of a pairwise stage (its receives and sends), in order.
void awaitTransfers(
    Transport& net,
    std::vector<c10::intrusive_ptr<c10d::Work>>& works,
    at::Tensor& sent,
    const char* what,
    double& transferSeconds);

} // namespace qccl::algo
