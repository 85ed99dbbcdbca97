#pragma once

// How the cross-rank check's parts travel (algo/agreement.h): each rank sends its part to
// every peer over the group's point-to-point engine, whose listeners keep receives posted
// for every peer. The part lands as soon as it arrives: one one-way latency. A Gloo
// collective instead sends only once its receiver has posted the receive, which the
// receiver does when it reaches the call, so on a link with latency every check cost a
// round trip (and a ring allgather n - 1 of them).
//
// Parts are matched per peer in sending order under a tag no user tag can take
// (p2p::kCheckTag), so the k-th check of one rank meets the k-th check of every other.

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "qccl/p2p/p2p_engine.h"
#include "qccl/transport/gloo_transport.h"

namespace qccl {

// Every rank's `mine` (the same size on every rank), in rank order. Waits as `net` does
// (the group's timeout, abort), naming `what` when it fails. Adds to waitedNs[r] the
// nanoseconds it waited for rank r's part (backend/peer_waits.h).
at::Tensor exchangeCheckParts(
    p2p::P2PEngine& p2p,
    GlooTransport& net,
    const at::Tensor& mine,
    const std::string& what,
    std::vector<int64_t>& waitedNs);

} // namespace qccl
