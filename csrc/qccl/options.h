#pragma once

// Public (installed as include/qccl/options.h): a group's settings, the C++ twin of
// Python's qccl.Options. A field left empty takes its value from the environment
// (QCCL_<KEY>, e.g. QCCL_CODEC), or qccl's default when that is unset; a field that is
// set wins over the environment. Fields are in the order designated initializers need:
//
//   qccl::Options{.codec = qccl::codecs::kInt8, .errorFeedback = true}

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <torch/csrc/distributed/c10d/Backend.hpp>

namespace qccl {

struct Options {
  std::optional<std::string> codec;           // all-reduce codec (qccl/codec_names.h)
  std::optional<int64_t> block;               // elements per quantization block (multiple of 8)
  std::optional<int64_t> minBytes;            // smaller tensors are reduced exactly
  std::optional<bool> errorFeedback;          // carry what the encoder dropped into the next call
  std::optional<bool> stochastic;             // stochastic rounding in the encoder
  std::optional<int64_t> bucketBytes;         // fusion cap for lists of tensors
  std::optional<int64_t> errorFeedbackMaxBytes;  // residual memory cap per group
  std::optional<bool> verify;                 // check every collective's arguments across ranks
  std::optional<bool> forceNetwork;           // never bypass the network (benchmarks)
  std::optional<std::string> p2pCodec;        // send/recv payloads: none, fp16, bf16 or int8
  std::optional<std::string> cudaTransport;   // CUDA tensors: "nccl" or "gloo" (staged through host)
  std::optional<std::string> allgatherCodec;  // all-gather (FSDP's weights) codec; default none
  std::optional<int64_t> ranksPerNode;        // consecutive ranks per node: exact inside, compressed across

  // How long any operation may wait for peers before it fails (torch's default too).
  std::chrono::milliseconds timeout = ::kBackendDefaultTimeout;

  // The fields that are set, as key -> text with Python's keys ("min_bytes", ...).
  std::map<std::string, std::string> settings() const;

  // Every setting a group created with these options now would use (environment
  // included). Throws c10::ValueError naming the valid values when one is invalid.
  std::map<std::string, std::string> resolved() const;
};

} // namespace qccl
