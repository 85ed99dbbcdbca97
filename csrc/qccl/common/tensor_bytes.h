#pragma once

// Data-movement collectives do not care about element types: qccl hands Gloo the raw
// bytes of every tensor, so every dtype (int16, complex, float8, ...) moves, including
// those Gloo's own type dispatch rejects.

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace qccl {

// A flat uint8 view of a contiguous tensor's elements (no copy).
at::Tensor asBytes(const at::Tensor& tensor);

int64_t byteSize(const at::Tensor& tensor);

// The first byte of a contiguous tensor's elements.
const uint8_t* bytePointer(const at::Tensor& contiguous);
uint8_t* mutableBytePointer(at::Tensor& contiguous);

// The bytes in each of `parts` pieces of `tensor` cut along dim 0 into `rowSplits` rows
// each (empty: equal pieces), as all_to_all_single cuts its input and output.
std::vector<int64_t> splitBytes(const at::Tensor& tensor, const std::vector<int64_t>& rowSplits, int parts);

// Copies the bytes of every tensor, in order, into one new flat uint8 tensor.
at::Tensor concatBytes(const std::vector<at::Tensor>& tensors);

// Copies consecutive byte ranges of `flat` (starting at `offset`) back into `tensors`;
// returns the offset just past the last byte consumed.
int64_t splitBytesInto(const at::Tensor& flat, std::vector<at::Tensor>& tensors, int64_t offset = 0);

} // namespace qccl
