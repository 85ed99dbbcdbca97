#pragma once

// qccl's settings. This is the one place that reads QCCL_* environment variables. A
// group's Config is the environment's values overridden by the settings passed at group
// creation (qccl.Options in Python); code paths receive a Config, never the environment.
//
// Every setting has a key ("codec") and an environment variable ("QCCL_CODEC"); values
// are parsed from text in both cases, so both give the same errors.

#include <cstdint>
#include <map>
#include <string>

#include "qccl/common/codec_kind.h"

namespace qccl {

struct Config {
  // Before each collective, check across ranks that the calls match (algo/agreement.h).
  // verify=0 saves one small message per collective, at the price that a size mismatch
  // across ranks crashes the process inside Gloo instead of raising.
  bool verifyAcrossRanks = true;

  // --- compressed allreduce (docs/algorithms.md) ---
  CodecKind codec = CodecKind::None;
  int64_t block = 256;                 // elements per quantization block
  int64_t minBytes = 64 << 10;         // smaller tensors are reduced exactly
  bool errorFeedback = false;          // carry what the encoder dropped into the next call
  bool stochastic = false;             // stochastic rounding in the encoder
  int64_t bucketBytes = 25 << 20;      // fusion cap for lists of tensors
  int64_t errorFeedbackMaxBytes = int64_t{1} << 30;  // residuals kept, least recent dropped

  // --- sharded data parallel (FSDP2, ZeRO; docs/algorithms.md) ---
  // reduce-scatter takes `codec`, as all-reduce does. all-gather carries weights, so it is
  // compressed only when this says so.
  CodecKind allgatherCodec = CodecKind::None;

  // --- hierarchical compression (docs/algorithms.md) ---
  // The group's ranks sit on nodes of this many consecutive ranks: compressed all-reduces
  // and reduce-scatters run exact inside a node, compressed across nodes. 1 (or the
  // group's size: one node) = off. 0: the nodes are the hosts the group's ranks sit on
  // (transport/host_layout.h), resolved when the group is created.
  int64_t ranksPerNode = 0;

  // --- point-to-point (docs/p2p.md) ---
  // Codec for floating-point send/recv payloads; sender and receiver must agree. Only
  // none, fp16, bf16 and int8: int4 is too coarse for activations.
  CodecKind p2pCodec = CodecKind::None;

  // --- CUDA tensors (docs/cuda.md) ---
  // Nccl: through an NCCL backend of the group's own. StagedThroughHost: copied to host
  // memory and run by the CPU path (Gloo); lets several ranks share one GPU, which NCCL
  // refuses, and serves machines without NCCL.
  enum class CudaTransport : uint8_t { Nccl, StagedThroughHost };
  CudaTransport cudaTransport = CudaTransport::Nccl;

  // Never take shared memory (the one-host collectives and check, a hierarchical group's
  // node stage, the point-to-point mailbox): every byte goes through Gloo's TCP sockets.
  // benchmarks/netlab sets it, so that shaped links are what a result was measured on,
  // and tests set it to run the socket paths on one host. NCCL's own SHM/P2P transports
  // are NCCL's to choose (NCCL_SHM_DISABLE, NCCL_P2P_DISABLE).
  bool forceNetwork = false;

  static Config fromEnvironment();

  // This configuration with `settings` (key -> text) applied; raises ValueError for an
  // unknown key or an invalid value, naming the valid ones.
  Config overriddenBy(const std::map<std::string, std::string>& settings) const;

  // key -> value as text, for qccl.Options' repr and for error messages.
  std::map<std::string, std::string> describe() const;

  // Equal on ranks whose collective settings are equal: checked across ranks with every
  // collective. p2p_codec is left out: each point-to-point message carries its own.
  int64_t fingerprint() const;
};

} // namespace qccl
