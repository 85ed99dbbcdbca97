#include "qccl/algo/reduce_lowering.h"

#include <ATen/ops/div.h>
#include <ATen/ops/maximum.h>
#include <ATen/ops/minimum.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/view_as_complex.h>
#include <ATen/ops/view_as_real.h>

#include "qccl/common/errors.h"

namespace qccl {
namespace {

using RedOp = c10d::ReduceOp::RedOpType;

bool isBitwise(RedOp op) {
  return op == RedOp::BAND || op == RedOp::BOR || op == RedOp::BXOR;
}

std::string describe(const std::string& opName, RedOp op, at::ScalarType dtype) {
  return opName + " cannot apply ReduceOp." + reduceOpName(op) + " to " +
      std::string(c10::toString(dtype)) + " tensors";
}

std::optional<at::Tensor> premulFactorOf(const c10d::ReduceOp& op) {
  auto* supplement = dynamic_cast<const c10d::PreMulSumSupplement*>(op.supplement_.get());
  TORCH_CHECK(supplement != nullptr, "qccl: PREMUL_SUM op carries no factor");
  if (supplement->tensor_factor.defined()) {
    return supplement->tensor_factor.to(at::kCPU).reshape({});
  }
  return at::scalar_tensor(supplement->double_factor, at::TensorOptions().dtype(at::kDouble));
}

} // namespace

std::string reduceOpName(RedOp op) {
  switch (op) {
    case RedOp::SUM: return "SUM";
    case RedOp::AVG: return "AVG";
    case RedOp::PRODUCT: return "PRODUCT";
    case RedOp::MIN: return "MIN";
    case RedOp::MAX: return "MAX";
    case RedOp::BAND: return "BAND";
    case RedOp::BOR: return "BOR";
    case RedOp::BXOR: return "BXOR";
    case RedOp::PREMUL_SUM: return "PREMUL_SUM";
    default: return "UNUSED";
  }
}

LoweredReduction lowerReduction(
    const c10d::ReduceOp& op,
    at::ScalarType dtype,
    const std::string& opName) {
  const RedOp requested = op.op_;
  LoweredReduction lowered;
  lowered.wireOp = requested;
  lowered.wireType = dtype;

  if (dtype == at::kBool) {
    // As NCCL: a bool SUM is a logical or, a PRODUCT a logical and; Gloo reduces the
    // bytes as uint8 so every rank ends with 0 or 1.
    QCCL_CHECK_TYPE(
        requested != RedOp::AVG && requested != RedOp::PREMUL_SUM,
        describe(opName, requested, dtype));
    lowered.wireType = at::kByte;
    lowered.reinterpret = true;
    if (requested == RedOp::SUM || requested == RedOp::BOR) {
      lowered.wireOp = RedOp::MAX;
    } else if (requested == RedOp::PRODUCT || requested == RedOp::BAND) {
      lowered.wireOp = RedOp::MIN;
    }
    return lowered;
  }

  const bool integral = at::isIntegralType(dtype, /*includeBool=*/false);
  const bool floating = at::isFloatingType(dtype);
  const bool complex = at::isComplexType(dtype);
  const bool glooKnowsType = dtype == at::kFloat || dtype == at::kDouble ||
      dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kChar ||
      dtype == at::kByte || dtype == at::kInt || dtype == at::kLong;

  QCCL_CHECK_TYPE(
      glooKnowsType || dtype == at::kShort || complex,
      opName, " cannot reduce ", c10::toString(dtype),
      " tensors (supported: float32, float64, float16, bfloat16, complex64, complex128, "
      "int8, int16, int32, int64, uint8, bool)");
  QCCL_CHECK_TYPE(!isBitwise(requested) || integral, describe(opName, requested, dtype));
  QCCL_CHECK_TYPE(
      requested != RedOp::PREMUL_SUM || floating || complex, describe(opName, requested, dtype));
  QCCL_CHECK_TYPE(
      !complex || requested == RedOp::SUM || requested == RedOp::AVG ||
          requested == RedOp::PREMUL_SUM,
      describe(opName, requested, dtype));
  QCCL_CHECK_TYPE(requested != RedOp::UNUSED, opName, " got an unset ReduceOp");

  if (dtype == at::kShort) {
    // int32 arithmetic truncated back to 16 bits gives exactly int16's wrap-around result.
    lowered.wireType = at::kInt;
  }
  if (complex) {
    lowered.viewComplexAsReal = true;
    lowered.wireType = c10::toRealValueType(dtype);
  }
  if (requested == RedOp::AVG) {
    lowered.wireOp = RedOp::SUM;
    lowered.divideByWorldSize = true;
    if (integral) {
      // Sum in 64 bits so the mean of small integers is exact, not a mean of wrapped sums.
      lowered.wireType = at::kLong;
    }
  }
  if (requested == RedOp::PREMUL_SUM) {
    lowered.wireOp = RedOp::SUM;
    lowered.premulFactor = premulFactorOf(op);
  }
  return lowered;
}

at::Tensor toWire(const LoweredReduction& lowered, const at::Tensor& input) {
  at::Tensor wire = input;
  if (lowered.viewComplexAsReal) {
    wire = at::view_as_real(wire);
  } else if (lowered.reinterpret) {
    wire = wire.view(lowered.wireType);
  }
  if (lowered.premulFactor) {
    // Scale in the tensor's own precision, as NCCL's PREMUL_SUM does.
    return at::mul(wire, lowered.premulFactor->to(wire.scalar_type()));
  }
  if (wire.scalar_type() != lowered.wireType) {
    return wire.to(lowered.wireType);
  }
  return wire;
}

int64_t wireBytes(const LoweredReduction& lowered, const at::Tensor& input) {
  return input.numel() * static_cast<int64_t>(c10::elementSize(lowered.wireType)) * (lowered.viewComplexAsReal ? 2 : 1);
}

void fromWire(const LoweredReduction& lowered, const at::Tensor& wire, at::Tensor& output, int worldSize) {
  if (lowered.divideByWorldSize) {
    if (at::isIntegralType(wire.scalar_type(), /*includeBool=*/false)) {
      wire.div_(worldSize, "trunc");
    } else {
      wire.div_(worldSize);
    }
  }
  at::Tensor target = output;
  if (lowered.viewComplexAsReal) {
    target = at::view_as_real(target);
  } else if (lowered.reinterpret) {
    target = target.view(lowered.wireType);
  }
  if (!wire.is_alias_of(target)) {
    target.copy_(wire.reshape(target.sizes()));
  }
}

void reduceInto(c10d::ReduceOp::RedOpType op, at::Tensor& acc, const at::Tensor& next) {
  using R = c10d::ReduceOp::RedOpType;
  switch (op) {
    case R::SUM:
      acc.add_(next);
      break;
    case R::PRODUCT:
      acc.mul_(next);
      break;
    case R::MIN:
      at::minimum_out(acc, acc, next);
      break;
    case R::MAX:
      at::maximum_out(acc, acc, next);
      break;
    case R::BAND:
      acc.bitwise_and_(next);
      break;
    case R::BOR:
      acc.bitwise_or_(next);
      break;
    case R::BXOR:
      acc.bitwise_xor_(next);
      break;
    default:
      TORCH_INTERNAL_ASSERT(false, "qccl: no local reduction for ", reduceOpName(op));
  }
}

} // namespace qccl
