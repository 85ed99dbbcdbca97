#include <cstdlib>
#include <functional>

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "qccl/common/config.h"

namespace qccl {
namespace {

// Sets an environment variable for the lifetime of the object.
struct ScopedEnv {
  ScopedEnv(const char* name, const char* value) : name_(name) {
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    unsetenv(name_);
  }
  const char* name_;
};

std::string messageOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const c10::ValueError& e) {
    return e.what_without_backtrace();
  }
  return "";
}

TEST(Config, DefaultsMatchTheDocumentation) {
  const Config c;
  EXPECT_EQ(c.codec, CodecKind::None);
  EXPECT_EQ(c.block, 256);
  EXPECT_EQ(c.minBytes, 64 * 1024);
  EXPECT_EQ(c.bucketBytes, 25 * 1024 * 1024);
  EXPECT_FALSE(c.errorFeedback);
  EXPECT_FALSE(c.stochastic);
}

TEST(Config, EnvironmentSuppliesDefaultsAndExplicitSettingsWin) {
  ScopedEnv codec("QCCL_CODEC", "int8");
  ScopedEnv block("QCCL_BLOCK", "128");
  const Config env = Config::fromEnvironment();
  EXPECT_EQ(env.codec, CodecKind::Int8);
  EXPECT_EQ(env.block, 128);
  const Config mine = env.overriddenBy({{"codec", "bf16"}, {"error_feedback", "1"}});
  EXPECT_EQ(mine.codec, CodecKind::Bf16);
  EXPECT_EQ(mine.block, 128);
  EXPECT_TRUE(mine.errorFeedback);
  EXPECT_NE(mine.fingerprint(), env.fingerprint());
}

TEST(Config, BadValuesNameTheValidOnes) {
  const std::string codec = messageOf([] { Config().overriddenBy({{"codec", "int3"}}); });
  EXPECT_NE(codec.find("qccl: codec=int3"), std::string::npos) << codec;
  EXPECT_NE(codec.find("none, fp16, bf16, int8, int4"), std::string::npos) << codec;

  ScopedEnv block("QCCL_BLOCK", "100");
  const std::string env = messageOf([] { Config::fromEnvironment(); });
  EXPECT_NE(env.find("QCCL_BLOCK=100"), std::string::npos) << env;
  EXPECT_NE(env.find("multiple of 8"), std::string::npos) << env;

  const std::string key = messageOf([] { Config().overriddenBy({{"codecs", "int8"}}); });
  EXPECT_NE(key.find("unknown option 'codecs'"), std::string::npos) << key;
  EXPECT_NE(messageOf([] { Config().overriddenBy({{"min_bytes", "-1"}}); }), "");
  EXPECT_NE(messageOf([] { Config().overriddenBy({{"stochastic", "yes"}}); }), "");
}

TEST(Config, DescribeRoundTrips) {
  const Config c = Config().overriddenBy({{"codec", "int4"}, {"block", "64"}, {"stochastic", "1"}});
  const Config again = Config().overriddenBy(c.describe());
  EXPECT_EQ(again.fingerprint(), c.fingerprint());
}

} // namespace
} // namespace qccl
