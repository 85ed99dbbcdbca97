// Checks the lowering of every (ReduceOp, dtype) pair against a float64/int64 reference:
// several simulated ranks lower their inputs, a stand-in for Gloo reduces the wire tensors
// with the lowered op, and the finished result must equal the reference.

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "qccl/algo/reduce_lowering.h"

namespace {

using qccl::LoweredReduction;
using RedOp = c10d::ReduceOp::RedOpType;

constexpr int kRanks = 3;

// What Gloo does with the wire tensors of every rank.
at::Tensor glooReduce(const std::vector<at::Tensor>& wires, RedOp op) {
  auto acc = wires[0].clone();
  for (size_t i = 1; i < wires.size(); ++i) {
    const auto& w = wires[i];
    switch (op) {
      case RedOp::SUM: acc.add_(w); break;
      case RedOp::PRODUCT: acc.mul_(w); break;
      case RedOp::MIN: acc = at::minimum(acc, w); break;
      case RedOp::MAX: acc = at::maximum(acc, w); break;
      case RedOp::BAND: acc.bitwise_and_(w); break;
      case RedOp::BOR: acc.bitwise_or_(w); break;
      case RedOp::BXOR: acc.bitwise_xor_(w); break;
      default: ADD_FAILURE() << "Gloo cannot run op " << qccl::reduceOpName(op);
    }
  }
  return acc;
}

std::vector<at::Tensor> inputsFor(at::ScalarType dtype) {
  std::vector<at::Tensor> inputs;
  for (int r = 0; r < kRanks; ++r) {
    at::manual_seed(100 + r);
    at::Tensor t;
    if (dtype == at::kBool) {
      t = at::randint(0, 2, {37}).to(at::kBool);
    } else if (at::isIntegralType(dtype, false)) {
      // Large enough that int16 sums and products wrap around.
      t = at::randint(-120, 120, {37}, at::TensorOptions().dtype(at::kLong)).to(dtype);
      if (dtype == at::kShort) {
        t = (at::randint(-30000, 30000, {37}, at::TensorOptions().dtype(at::kLong))).to(dtype);
      }
      if (dtype == at::kByte) {
        t = at::randint(0, 255, {37}, at::TensorOptions().dtype(at::kLong)).to(dtype);
      }
    } else {
      t = at::randn({37}, at::TensorOptions().dtype(dtype));
    }
    inputs.push_back(t);
  }
  return inputs;
}

// The reference result, computed in 64-bit arithmetic from the inputs.
at::Tensor reference(const std::vector<at::Tensor>& inputs, const c10d::ReduceOp& op, double factor) {
  const auto dtype = inputs[0].scalar_type();
  const bool exact = at::isIntegralType(dtype, true);
  const auto wide = exact ? at::kLong : (at::isComplexType(dtype) ? at::kComplexDouble : at::kDouble);
  std::vector<at::Tensor> xs;
  for (const auto& t : inputs) {
    xs.push_back(t.to(wide));
  }
  auto stack = at::stack(xs);
  at::Tensor out;
  switch (op.op_) {
    case RedOp::SUM: out = dtype == at::kBool ? stack.amax(0) : stack.sum(0); break;
    case RedOp::AVG: out = exact ? stack.sum(0).div(kRanks, "trunc") : stack.sum(0) / kRanks; break;
    case RedOp::PREMUL_SUM: out = (stack * factor).sum(0); break;
    case RedOp::PRODUCT: out = dtype == at::kBool ? stack.amin(0) : stack.prod(0); break;
    case RedOp::MIN: out = stack.amin(0); break;
    case RedOp::MAX: out = stack.amax(0); break;
    case RedOp::BAND: out = xs[0].bitwise_and(xs[1]).bitwise_and(xs[2]); break;
    case RedOp::BOR: out = xs[0].bitwise_or(xs[1]).bitwise_or(xs[2]); break;
    case RedOp::BXOR: out = xs[0].bitwise_xor(xs[1]).bitwise_xor(xs[2]); break;
    default: ADD_FAILURE();
  }
  return out.to(dtype);  // integer casts wrap around exactly as fixed-width arithmetic
}

c10d::ReduceOp makeOp(RedOp op, double factor) {
  return op == RedOp::PREMUL_SUM ? c10d::makePreMulSum(factor) : c10d::ReduceOp(op);
}

struct Case {
  at::ScalarType dtype;
  RedOp op;
};

class LoweringMatchesReference : public ::testing::TestWithParam<Case> {};

TEST_P(LoweringMatchesReference, AcrossSimulatedRanks) {
  const auto [dtype, redop] = GetParam();
  const double factor = 0.25;
  const auto op = makeOp(redop, factor);
  const LoweredReduction lowered = qccl::lowerReduction(op, dtype, "test");
  auto inputs = inputsFor(dtype);
  std::vector<at::Tensor> wires;
  for (const auto& t : inputs) {
    wires.push_back(qccl::toWire(lowered, t.clone()));
  }
  auto reduced = glooReduce(wires, lowered.wireOp);
  auto output = at::empty_like(inputs[0]);
  qccl::fromWire(lowered, reduced, output, kRanks);

  auto expected = reference(inputs, op, factor);
  ASSERT_EQ(output.scalar_type(), dtype);
  if (at::isIntegralType(dtype, true)) {
    EXPECT_TRUE(at::equal(output, expected)) << output << expected;
  } else {
    const double tol = (dtype == at::kHalf || dtype == at::kBFloat16) ? 5e-2 : 1e-5;
    EXPECT_TRUE(at::allclose(output.to(at::kComplexDouble), expected.to(at::kComplexDouble), tol, tol))
        << output << expected;
  }
}

std::vector<Case> allValidCases() {
  std::vector<Case> cases;
  for (auto dtype : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16}) {
    for (auto op : {RedOp::SUM, RedOp::AVG, RedOp::PREMUL_SUM, RedOp::PRODUCT, RedOp::MIN, RedOp::MAX}) {
      cases.push_back({dtype, op});
    }
  }
  for (auto dtype : {at::kComplexFloat, at::kComplexDouble}) {
    for (auto op : {RedOp::SUM, RedOp::AVG, RedOp::PREMUL_SUM}) {
      cases.push_back({dtype, op});
    }
  }
  for (auto dtype : {at::kChar, at::kShort, at::kInt, at::kLong, at::kByte}) {
    for (auto op : {RedOp::SUM, RedOp::AVG, RedOp::PRODUCT, RedOp::MIN, RedOp::MAX, RedOp::BAND,
                    RedOp::BOR, RedOp::BXOR}) {
      cases.push_back({dtype, op});
    }
  }
  for (auto op : {RedOp::SUM, RedOp::PRODUCT, RedOp::MIN, RedOp::MAX, RedOp::BAND, RedOp::BOR, RedOp::BXOR}) {
    cases.push_back({at::kBool, op});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(
    AllPairs,
    LoweringMatchesReference,
    ::testing::ValuesIn(allValidCases()),
    [](const ::testing::TestParamInfo<Case>& info) {
      return std::string(c10::toString(info.param.dtype)) + "_" + qccl::reduceOpName(info.param.op);
    });

TEST(Lowering, InPlaceWhenGlooTakesTheTensorAsIs) {
  auto t = at::ones({4});
  auto lowered = qccl::lowerReduction(c10d::ReduceOp(RedOp::SUM), at::kFloat, "test");
  EXPECT_TRUE(qccl::toWire(lowered, t).is_same(t));
  auto flags = at::ones({4}, at::TensorOptions().dtype(at::kBool));
  auto boolLowered = qccl::lowerReduction(c10d::ReduceOp(RedOp::SUM), at::kBool, "test");
  EXPECT_TRUE(qccl::toWire(boolLowered, flags).is_alias_of(flags));
}

void expectTypeError(RedOp op, at::ScalarType dtype, const std::string& fragment) {
  try {
    qccl::lowerReduction(makeOp(op, 2.0), dtype, "all_reduce on rank 0");
    ADD_FAILURE() << "no error for " << qccl::reduceOpName(op) << " on " << dtype;
  } catch (const c10::TypeError& e) {
    const std::string message = e.what_without_backtrace();
    EXPECT_EQ(message.rfind("qccl: all_reduce on rank 0", 0), 0u) << message;
    EXPECT_NE(message.find(fragment), std::string::npos) << message;
  }
}

TEST(Lowering, RejectsPairsThatMakeNoSense) {
  expectTypeError(RedOp::BAND, at::kFloat, "BAND");
  expectTypeError(RedOp::BXOR, at::kHalf, "BXOR");
  expectTypeError(RedOp::AVG, at::kBool, "AVG");
  expectTypeError(RedOp::PREMUL_SUM, at::kInt, "PREMUL_SUM");
  expectTypeError(RedOp::MAX, at::kComplexFloat, "MAX");
  expectTypeError(RedOp::SUM, at::kUInt16, "supported");
}

} // namespace
