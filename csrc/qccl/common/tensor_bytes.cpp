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

const uint8_t* bytePointer(const at::Tensor& contiguous) {
  return static_cast<const uint8_t*>(contiguous.const_data_ptr());
}

uint8_t* mutableBytePointer(at::Tensor& contiguous) {
  return static_cast<uint8_t*>(contiguous.mutable_data_ptr());
}

std::vector<int64_t> splitBytes(const at::Tensor& tensor, const std::vector<int64_t>& rowSplits, int parts) {
  const int64_t rows = tensor.size(0);
  const int64_t rowBytes = rows == 0 ? 0 : byteSize(tensor) / rows;
  std::vector<int64_t> bytes;
  bytes.reserve(parts);
  for (int i = 0; i < parts; ++i) {
    bytes.push_back((rowSplits.empty() ? rows / parts : rowSplits[i]) * rowBytes);
  }
  return bytes;
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
