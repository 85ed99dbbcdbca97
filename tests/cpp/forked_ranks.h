#pragma once

// Ranks as real processes, for the shared-memory transport's tests: fork() one child per
// rank, talk to each child over a pair of pipes (lines of text), and collect what each
// child reports. A child runs only the code under test and _exit()s; it never runs gtest
// assertions (they would be lost with it): it reports a line, the parent asserts.

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "qccl/common/errors.h"

namespace qccl::testing {

class ForkedRanks {
 public:
  // body(rank) runs in the child; its return value is the child's result line, an
  // exception becomes "threw: <message>".
  // The body may use this object (send, receive, size) through a reference it captured.
  ForkedRanks(int size, const std::function<std::string(int rank)>& body) : size_(size) {
    for (int rank = 0; rank < size; ++rank) {
      int up[2];
      int down[2];
      if (pipe(up) != 0 || pipe(down) != 0) {
        throw std::runtime_error("pipe failed");
      }
      const pid_t pid = fork();
      if (pid == 0) {
        close(up[0]);
        close(down[1]);
        childUp_ = up[1];
        childDown_ = down[0];
        std::string result;
        try {
          result = body(rank);
        } catch (...) {
          result = "threw: " + describeException(std::current_exception());
        }
        send("result " + result);
        _exit(0);
      }
      close(up[1]);
      close(down[0]);
      children_.push_back({pid, up[0], down[1]});
    }
  }

  ~ForkedRanks() {
    for (auto& child : children_) {
      if (child.pid > 0) {
        ::kill(child.pid, SIGKILL);
        waitpid(child.pid, nullptr, 0);
      }
      close(child.up);
      close(child.down);
    }
  }

  // In a child: one line to the parent, one line from it.
  void send(const std::string& line) const {
    writeLine(childUp_, line);
  }
  std::string receive() const {
    return readLine(childDown_, std::chrono::hours(1));
  }

  // In the parent. receiveFrom returns "" if the child says nothing for `limit`.
  std::string receiveFrom(int rank, std::chrono::milliseconds limit = std::chrono::seconds(60)) const {
    return readLine(children_[rank].up, limit);
  }
  void sendTo(int rank, const std::string& line) const {
    writeLine(children_[rank].down, line);
  }
  pid_t pid(int rank) const {
    return children_[rank].pid;
  }
  int size() const {
    return size_;
  }

  // Relays one line from every child ("its segment name") to every child, as the group's
  // store does for the real integration.
  void exchangeLines() const {
    std::string all;
    for (int rank = 0; rank < size(); ++rank) {
      all += (rank ? " " : "") + receiveFrom(rank);
    }
    for (int rank = 0; rank < size(); ++rank) {
      sendTo(rank, all);
    }
  }

  void kill(int rank) {
    ::kill(children_[rank].pid, SIGKILL);
    waitpid(children_[rank].pid, nullptr, 0);
    children_[rank].pid = -1;
  }

  // Every living child's result line ("killed" for those killed), once all have ended;
  // a child still running after `limit` is killed and reports "hung".
  std::vector<std::string> results(std::chrono::milliseconds limit = std::chrono::seconds(60)) {
    std::vector<std::string> out;
    for (int rank = 0; rank < size(); ++rank) {
      if (children_[rank].pid < 0) {
        out.push_back("killed");
        continue;
      }
      std::string line;
      do { // skip lines the parent did not read
        line = receiveFrom(rank, limit);
      } while (!line.empty() && line.rfind("result ", 0) != 0);
      ::kill(children_[rank].pid, SIGKILL); // no-op for a child that has ended
      int status = 0;
      waitpid(children_[rank].pid, &status, 0);
      children_[rank].pid = -1;
      if (!line.empty()) {
        out.push_back(line.substr(7));
      } else if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL) {
        out.push_back("died of signal " + std::to_string(WTERMSIG(status)));
      } else {
        out.push_back("hung");
      }
    }
    return out;
  }

 private:
  struct Child {
    pid_t pid;
    int up; // child -> parent
    int down; // parent -> child
  };

  static void writeLine(int fd, std::string line) {
    line += '\n';
    for (size_t done = 0; done < line.size();) {
      const ssize_t n = write(fd, line.data() + done, line.size() - done);
      if (n <= 0) {
        return;
      }
      done += static_cast<size_t>(n);
    }
  }

  static std::string readLine(int fd, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    std::string line;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      struct pollfd entry {fd, POLLIN, 0};
      if (left.count() <= 0 || poll(&entry, 1, static_cast<int>(left.count())) <= 0) {
        return "";
      }
      char c;
      if (read(fd, &c, 1) != 1) {
        return "";
      }
      if (c == '\n') {
        return line;
      }
      line += c;
    }
  }

  int size_;
  std::vector<Child> children_;
  int childUp_ = -1;
  int childDown_ = -1;
};

} // namespace qccl::testing
