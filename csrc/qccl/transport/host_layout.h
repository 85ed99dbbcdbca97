#pragma once

// Which ranks of a group share a host (issue 28): each rank publishes its hostIdentity()
// (transport/shm/host_identity.h) through the group's store when the group is created,
// and reads every rank's, so every rank decides alike. Never from LOCAL_WORLD_SIZE: a
// subgroup's ranks may sit on any hosts.
//
// It decides two things: a group on one host goes through shared memory; a group whose
// hosts each hold a run of as many consecutive ranks has nodes of that many ranks
// (hierarchical compression, docs/algorithms.md), unless ranks_per_node says otherwise.

#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/Store.hpp>

namespace qccl {

class HostLayout {
 public:
  explicit HostLayout(std::vector<std::string> hostOfRank) : hostOfRank_(std::move(hostOfRank)) {}

  // Every rank's identity through `store`, under keys of its own.
  static HostLayout share(c10d::Store& store, int rank, int size);

  // Whether ranks [first, first + count) are all on one host.
  bool shareAHost(int first, int count) const;
  bool oneHost() const {
    return shareAHost(0, static_cast<int>(hostOfRank_.size()));
  }
  // L when the ranks sit on two or more hosts, each holding a run of L > 1 consecutive
  // ranks; else 1 (one host, a host with one rank, or runs that differ or interleave).
  int ranksPerNode() const;

 private:
  std::vector<std::string> hostOfRank_;
};

} // namespace qccl
