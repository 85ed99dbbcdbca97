// The Python extension qccl._C: the only C++ that sees pybind11. It is compiled against
// the pybind11 copy inside torch (torch/include/pybind11) so that c10d::Backend and
// Store are the very types torch registered.

#include <pybind11/chrono.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/version.h>

#include "qccl/backend/process_group_qccl.h"
#include "qccl/common/build_info.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "qccl C++ extension: the ProcessGroupQCCL c10d backend";

  // torch registers c10d::Backend in torch._C._distributed_c10d; it must exist first.
  py::module_::import("torch._C._distributed_c10d");

  py::class_<qccl::ProcessGroupQCCL, c10d::Backend, c10::intrusive_ptr<qccl::ProcessGroupQCCL>>(
      m, "ProcessGroupQCCL")
      .def(
          py::init([](const c10::intrusive_ptr<c10d::Backend>& gloo,
                      int rank,
                      int size,
                      std::chrono::milliseconds timeout) {
            return c10::make_intrusive<qccl::ProcessGroupQCCL>(gloo, rank, size, timeout);
          }),
          py::arg("gloo"),
          py::arg("rank"),
          py::arg("size"),
          py::arg("timeout"),
          py::call_guard<py::gil_scoped_release>(),
          "Wraps `gloo` (a ProcessGroupGloo over the same store, rank and size) as the "
          "CPU transport.");

  m.def("has_cuda", &qccl::builtWithCuda, "Whether this build compiled qccl's CUDA code.");
  m.def("cuda_self_test", &qccl::cudaSelfTest,
        "Launches a trivial kernel; returns True when a GPU ran it (False without a GPU).");
  m.attr("torch_version") = TORCH_VERSION;
}
