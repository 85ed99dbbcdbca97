#pragma once

// Every Gloo slot (send/recv tag) qccl uses for its own traffic, in one place so that no
// two uses meet. Gloo's collectives use slots with a prefix in the high bits, so these
// small values never meet theirs; users' point-to-point tags travel in qccl's message
// header (p2p/message.h), never in the slot. Each (peer, slot) is matched in posting
// order, so the two sides of a slot must post their transfers in the same order.

#include <cstdint>

namespace qccl {

// The point-to-point engine (p2p/).
constexpr uint32_t kControlSlot = 0x51430001;        // headers and statuses
constexpr uint32_t kPayloadSlot = 0x51430002;        // a payload that does not fit inline
constexpr uint32_t kStagedPayloadSlot = 0x51430003;  // a payload for a receive posted later

// The compressed collectives' pairwise stages (algo/compressed_allreduce.cpp).
constexpr uint32_t kAllToAllSlot = 0x51430004;
constexpr uint32_t kAllGatherSlot = 0x51430005;

// The deep exact reductions' two stages (algo/deep_reduction.h).
constexpr uint32_t kDeepReduceSlot = 0x51430006;  // contributions to their shard's owner
constexpr uint32_t kDeepResultSlot = 0x51430007;  // the owner's reduced shard to every rank

} // namespace qccl
