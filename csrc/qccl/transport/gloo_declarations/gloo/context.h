#pragma once

// Stand-in declarations (see ../../README.md): what ProcessGroupGloo.hpp names of Gloo's
// context and transport. Never defined here; qccl only holds pointers to them.

#include <chrono>

namespace gloo {

class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);  // named by an inline setTimeout()
};

namespace transport {
class Device;
class UnboundBuffer;
} // namespace transport

} // namespace gloo
