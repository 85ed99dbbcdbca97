#include "qccl/transport/shm/host_identity.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace qccl::shm {
namespace {

std::string bootId() {
  std::ifstream file("/proc/sys/kernel/random/boot_id");
  std::string id;
  return std::getline(file, id) && !id.empty() ? id : "?";
}

std::string hostname() {
  char name[256] = {};
  return gethostname(name, sizeof(name) - 1) == 0 ? name : "?";
}

// A namespace is named by the device and inode of its /proc/self/ns link (namespaces(7)).
std::string fileIdentity(const char* path, bool withInode) {
  struct stat st {};
  if (stat(path, &st) != 0) {
    return "?";
  }
  std::ostringstream out;
  out << major(st.st_dev) << ':' << minor(st.st_dev);
  if (withInode) {
    out << ':' << st.st_ino;
  }
  return out.str();
}

} // namespace

std::string hostIdentity() {
  std::ostringstream out;
  out << "boot=" << bootId() << ";host=" << hostname() << ";netns=" << fileIdentity("/proc/self/ns/net", true)
      << ";ipcns=" << fileIdentity("/proc/self/ns/ipc", true) << ";pidns=" << fileIdentity("/proc/self/ns/pid", true)
      << ";shm=" << fileIdentity("/dev/shm", false);
  return out.str();
}

} // namespace qccl::shm
