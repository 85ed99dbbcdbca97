#include "qccl/common/tensor_bytes.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>

namespace qccl {

at::Tensor asBytes(const at::Tensor& tensor) {
  return tensor.reshape({-1}).view(at::kByte);
}

int64_t byteSize(const at::Tensor& tensor) {
  return tensor.numel() * static_cast<int64_t>(tensor.element_size());
}

at::Tensor concatBytes(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> views;
  views.reserve(tensors.size());
  for (const auto& t : tensors) {
    views.push_back(asBytes(t.contiguous()));
  }
  if (views.empty()) {
    return at::empty({0}, at::TensorOptions().dtype(at::kByte));
  }
  return at::cat(views);
}

int64_t splitBytesInto(const at::Tensor& flat, std::vector<at::Tensor>& tensors, int64_t offset) {
  for (auto& t : tensors) {
    const int64_t n = byteSize(t);
    asBytes(t).copy_(flat.narrow(0, offset, n));
    offset += n;
  }
  return offset;
}

} // namespace qccl
