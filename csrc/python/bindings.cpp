// The Python extension qccl._C: the only C++ that sees pybind11. It is compiled against
// the pybind11 copy inside torch (torch/include/pybind11) so that c10d::Backend and
// Store are the very types torch registered.

#include <pybind11/chrono.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/version.h>

#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>

#include "qccl/backend/live_groups.h"
#include "qccl/backend/process_group_qccl.h"
#include "qccl/backend/reconfigurable_group.h"
#include "qccl/codec/codec.h"
#include "qccl/codec/cuda/device_codec.h"
#include "qccl/common/build_info.h"
#include "qccl/common/cuda_stream.h"
#include "qccl/common/errors.h"
#include "qccl/transport/fresh_prefix.h"
#include "qccl/transport/gloo_factory.h"

namespace py = pybind11;
using Settings = std::map<std::string, std::string>;

namespace {

qccl::Config configWith(const Settings& settings) {
  return qccl::Config::fromEnvironment().overriddenBy(settings);
}

py::dict statsDict(const qccl::algo::StatsSnapshot& s) {
  py::dict exact;
  for (size_t i = 0; i < s.tensorsByRoute.size(); ++i) {
    const auto route = static_cast<qccl::algo::Route>(i);
    if (route != qccl::algo::Route::Compressed) {
      exact[qccl::algo::routeName(route)] = s.tensorsByRoute[i];
    }
  }
  py::dict d;
  d["calls"] = s.calls;
  d["tensors"] = s.tensors;
  d["compressed_tensors"] = s.compressedTensors;
  d["exact_tensors"] = exact;
  d["logical_bytes"] = s.logicalBytes;
  d["wire_bytes"] = s.wireBytes;
  d["node_wire_bytes"] = s.nodeWireBytes;
  d["exact_wire_bytes"] = s.exactWireBytes;
  d["encode_seconds"] = s.encodeSeconds;
  d["communicate_seconds"] = s.communicateSeconds;
  d["decode_seconds"] = s.decodeSeconds;
  return d;
}

std::unique_ptr<qccl::codec::Codec> codecNamed(const std::string& name, int64_t block) {
  auto kind = qccl::parseCodecName(name);
  QCCL_CHECK_VALUE(kind.has_value() && *kind != qccl::CodecKind::None, "'", name, "' is not a compressing codec");
  return qccl::codec::makeCodec(*kind, block);
}

at::Tensor flatFloat32(const at::Tensor& t) {
  QCCL_CHECK_TYPE(t.scalar_type() == at::kFloat, "codecs take float32 tensors, not ", t.scalar_type());
  return t.contiguous().view({-1});
}

void checkSameDevice(const at::Tensor& t, const at::Tensor& reference, const char* what) {
  QCCL_CHECK_VALUE(t.device() == reference.device(), what, " is on ", t.device().str(), " but the values are on ",
                   reference.device().str());
}

// The codecs on their own, for tests and benchmarks (python/qccl/testing). CUDA tensors
// run the codec kernels on the current stream; CPU tensors the CPU codecs.
void bindCodecs(py::module_& m) {
  m.def("codec_encoded_bytes", [](const std::string& name, int64_t block, int64_t n) {
    return codecNamed(name, block)->encodedBytes(n);
  });
  m.def(
      "codec_encode",
      [](const std::string& name, int64_t block, const at::Tensor& values, bool stochastic, uint64_t seed,
         std::optional<at::Tensor> into) {
        auto codec = codecNamed(name, block);
        auto in = flatFloat32(values);
        const int64_t bytes = codec->encodedBytes(in.numel());
        auto out = into.has_value() ? *into : at::empty({bytes}, in.options().dtype(at::kByte));
        QCCL_CHECK_VALUE(
            out.scalar_type() == at::kByte && out.is_contiguous() && out.numel() == bytes,
            "codec_encode: `out` must be contiguous uint8 of ", bytes, " bytes");
        checkSameDevice(out, in, "codec_encode: `out`");
        qccl::codec::EncodeOptions options;
        options.stochastic = stochastic;
        options.seed = seed;
        if (in.is_cuda()) {
          c10::DeviceGuard guard(in.device());
          qccl::codec::cuda::encode(codec->kind(), block, in.data_ptr<float>(), in.numel(), out.data_ptr<uint8_t>(),
                                    options, qccl::currentCudaStream(in.device()));
          return out;
        }
        py::gil_scoped_release release;
        codec->encode(in.data_ptr<float>(), in.numel(), out.data_ptr<uint8_t>(), options);
        return out;
      },
      py::arg("name"), py::arg("block"), py::arg("values"), py::arg("stochastic") = false, py::arg("seed") = 0,
      py::arg("out") = py::none());
  m.def(
      "codec_decode",
      [](const std::string& name, int64_t block, const at::Tensor& bytes, int64_t n, std::optional<at::Tensor> addTo) {
        auto codec = codecNamed(name, block);
        QCCL_CHECK_TYPE(bytes.scalar_type() == at::kByte && bytes.is_contiguous(), "codec_decode takes contiguous uint8 bytes");
        QCCL_CHECK_VALUE(
            bytes.numel() == codec->encodedBytes(n), name, " encodes ", n, " elements in ",
            codec->encodedBytes(n), " bytes, not ", bytes.numel());
        at::Tensor out = addTo.has_value() ? flatFloat32(*addTo) : at::empty({n}, bytes.options().dtype(at::kFloat));
        QCCL_CHECK_VALUE(out.numel() == n, "add_to holds ", out.numel(), " elements, not ", n);
        checkSameDevice(out, bytes, "codec_decode: `add_to`");
        if (bytes.is_cuda()) {
          c10::DeviceGuard guard(bytes.device());
          qccl::codec::cuda::decode(codec->kind(), block, bytes.data_ptr<uint8_t>(), n, out.data_ptr<float>(),
                                    addTo.has_value(), qccl::currentCudaStream(bytes.device()));
        } else {
          py::gil_scoped_release release;
          if (addTo.has_value()) {
            codec->decodeAdd(bytes.data_ptr<uint8_t>(), n, out.data_ptr<float>());
          } else {
            codec->decode(bytes.data_ptr<uint8_t>(), n, out.data_ptr<float>());
          }
        }
        if (!addTo.has_value()) {
          return out;
        }
        if (out.data_ptr() != addTo->data_ptr()) {
          addTo->copy_(out.view(addTo->sizes()));  // add_to was not contiguous: the sum went to a copy
        }
        return *addTo;
      },
      py::arg("name"), py::arg("block"), py::arg("bytes"), py::arg("n"), py::arg("add_to") = py::none());
}

void bindBackend(py::module_& m) {
  using qccl::ProcessGroupQCCL;
  // The GIL is released before the group is destroyed, as torch does for its own groups:
  // destroying it joins the threads of its inner Gloo backend, and one of them may hold the
  // last reference to a caller's tensor (a failed call's), whose release takes the GIL.
  // Holding it here deadlocked destroy_process_group after a failure (about 1 in 40).
  py::class_<ProcessGroupQCCL, c10d::Backend, c10::intrusive_ptr<ProcessGroupQCCL>>(
      m, "ProcessGroupQCCL", py::release_gil_before_calling_cpp_dtor())
      .def(
          py::init([](const c10::intrusive_ptr<c10d::Backend>& gloo,
                      int rank,
                      int size,
                      std::chrono::milliseconds timeout,
                      const Settings& settings,
                      const std::optional<c10::intrusive_ptr<c10d::Backend>>& nccl,
                      const std::optional<c10::intrusive_ptr<c10d::Store>>& store) {
            auto group = c10::make_intrusive<ProcessGroupQCCL>(
                gloo, rank, size, timeout, configWith(settings), nccl.value_or(nullptr), store.value_or(nullptr));
            qccl::rememberLiveGroup(group);
            return group;
          }),
          py::arg("gloo"),
          py::arg("rank"),
          py::arg("size"),
          py::arg("timeout"),
          py::arg("settings") = Settings{},
          py::arg("nccl") = py::none(),
          py::arg("store") = py::none(),
          py::call_guard<py::gil_scoped_release>(),
          "Wraps `gloo` (a ProcessGroupGloo over the same store, rank and size) as the "
          "CPU transport and `nccl` (a ProcessGroupNCCL made the same way, or None) as the "
          "CUDA one; `settings` override the QCCL_* environment. Over NCCL, ranks compare "
          "their point-to-point settings through `store`, the group's.")
      .def("settings", [](const ProcessGroupQCCL& pg) { return pg.config().describe(); })
      .def("compression_stats", [](const ProcessGroupQCCL& pg) { return statsDict(pg.compressionStats()); })
      .def("reduce_scatter_stats", [](const ProcessGroupQCCL& pg) { return statsDict(pg.shardedCompression().reduceScatterStats()); })
      .def("all_gather_stats", [](const ProcessGroupQCCL& pg) { return statsDict(pg.shardedCompression().allgatherStats()); })
      .def("shared_memory_ranks", &ProcessGroupQCCL::sharedMemoryRanks)
      .def("shared_memory_bytes", &ProcessGroupQCCL::sharedMemoryBytes)
      .def("calls_in_check", &ProcessGroupQCCL::callsInCheck)
      .def(
          "peer_waits",
          [](const ProcessGroupQCCL& pg) {
            py::list peers;
            for (const auto& peer : pg.peerWaits()) {
              py::dict d;
              d["checks"] = peer.checks;
              d["seconds"] = static_cast<double>(peer.totalNs) * 1e-9;
              d["longest_seconds"] = static_cast<double>(peer.longestNs) * 1e-9;
              d["histogram"] = peer.histogram;
              peers.append(d);
            }
            return peers;
          },
          "Per rank of the group: how long this rank's cross-rank checks waited for it "
          "(backend/peer_waits.h); this rank's own entry stays empty.")
      .def("reset_compression_stats", &ProcessGroupQCCL::resetCompressionStats)
      .def("abandon_coalescing", &ProcessGroupQCCL::abandonCoalescing, py::call_guard<py::gil_scoped_release>())
      .def("enter_exact", &ProcessGroupQCCL::enterExactRegion)
      .def("exit_exact", &ProcessGroupQCCL::exitExactRegion)
      .def(
          "compression_state",
          [](ProcessGroupQCCL& pg) {
            qccl::algo::CompressionState state;
            {
              py::gil_scoped_release release;  // waits for the group's queued work
              state = pg.saveCompressionState();
            }
            py::dict d;
            d["calls"] = state.calls;
            d["residuals"] = state.residuals;
            d["sharded_calls"] = state.shardedCalls;
            d["reduce_scatter_places"] = state.reduceScatterPlaces;
            d["reduce_scatter_residuals"] = state.reduceScatterResiduals;
            return d;
          })
      .def(
          "load_compression_state",
          [](ProcessGroupQCCL& pg, int64_t calls, const std::vector<at::Tensor>& residuals, int64_t shardedCalls,
             const std::vector<int64_t>& reduceScatterPlaces, const std::vector<at::Tensor>& reduceScatterResiduals) {
            pg.loadCompressionState({calls, residuals, shardedCalls, reduceScatterPlaces, reduceScatterResiduals});
          },
          py::arg("calls"), py::arg("residuals"), py::arg("sharded_calls") = 0,
          py::arg("reduce_scatter_places") = std::vector<int64_t>{},
          py::arg("reduce_scatter_residuals") = std::vector<at::Tensor>{},
          py::call_guard<py::gil_scoped_release>());

  using qccl::ReconfigurableGroup;
  py::class_<ReconfigurableGroup, c10d::Backend, c10::intrusive_ptr<ReconfigurableGroup>>(
      m, "ReconfigurableGroup", py::release_gil_before_calling_cpp_dtor())
      .def(
          py::init([](const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                      std::chrono::milliseconds timeout, const Settings& settings) {
            return c10::make_intrusive<ReconfigurableGroup>(store, rank, size, timeout, configWith(settings));
          }),
          py::arg("store"), py::arg("rank"), py::arg("size"), py::arg("timeout"), py::arg("settings") = Settings{},
          "A qccl group made with enable_reconfigure=True: no members until dist._reconfigure.")
      .def("current", &ReconfigurableGroup::current,
           "The ProcessGroupQCCL of the current members (raises before the first reconfigure).");
}

} // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "qccl C++ extension: the ProcessGroupQCCL c10d backend";

  // torch registers c10d::Backend in torch._C._distributed_c10d; it must exist first.
  py::module_::import("torch._C._distributed_c10d");

  bindBackend(m);
  bindCodecs(m);
  m.def("mark_step", &qccl::algo::markStep,
        "Starts a new training step for every qccl group of the process: the reduce-scatters "
        "that follow find the error-feedback residuals of the same places in the last step.");
  m.def("resolve_settings", [](const Settings& settings) { return configWith(settings).describe(); },
        "The settings a group created now would use: the QCCL_* environment overridden by "
        "`settings`. Raises ValueError for unknown keys or invalid values.");
  m.def("fresh_store_prefix", &qccl::agreeOnFreshPrefix, py::arg("store"), py::arg("rank"), py::arg("size"),
        py::arg("timeout"), py::call_guard<py::gil_scoped_release>(),
        "A key prefix of `store` that no earlier creation of a group on it used, agreed by "
        "all `size` ranks (each calls it): where the group's transports keep their keys.");
  m.def("close_every_group_at_exit", &qccl::closeEveryLiveGroup, py::call_guard<py::gil_scoped_release>(),
        "Stops the threads of every qccl group still alive (failing calls nobody waited "
        "for), while the interpreter can still take the tensors they release: "
        "python/qccl/_exit.py.");
  m.def("has_cuda", &qccl::builtWithCuda, "Whether this build compiled qccl's CUDA code.");
  m.def("cuda_self_test", &qccl::cudaSelfTest,
        "Launches a trivial kernel; returns True when a GPU ran it (False without a GPU).");
  m.attr("torch_version") = TORCH_VERSION;
  m.attr("GLOO_THREADS") = qccl::kGlooThreads;
  m.attr("PEER_WAIT_BUCKETS_PER_DOUBLING") = qccl::PeerWaits::kBucketsPerDoubling;
}
