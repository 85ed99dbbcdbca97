#pragma once

// The control message of qccl's point-to-point protocol (docs/p2p.md).
//
// Every point-to-point message starts with a control message of at most kControlBytes
// on the pair's control slot: a Header, then room for a small payload. A Data message
// whose payload fits (at most kInlineBytes) carries it there, in one transfer; a larger one
// sends `payloadBytes` after it on the pair's payload slot, or, up to kStagingBytes, as
// StagedData on the staged payload slot. The receiver answers only a
// message that a receive rejects (Rejected, with what the receive was posted for): a
// send completes without waiting for the receiver, and its sender learns of a rejection
// through a later call (docs/p2p.md).

#include <cstdint>
#include <cstring>
#include <vector>

#include <ATen/core/Tensor.h>

#include "qccl/transport/slots.h"

namespace qccl::p2p {

// "QCCP2": version 2 answers only rejections; a peer speaking version 1 fails the pair.
constexpr int64_t kMagic = 0x3250434351;

enum class Kind : int64_t {
  Data = 1,        // a message; a payload that does not fit inline follows on kPayloadSlot
  Rejected = 2,    // status: the receive the message met has another size, dtype or codec
  StagedData = 3,  // a message whose payload follows on kStagedPayloadSlot
  GroupFailed = 4, // notice: the sender's group failed (a timeout, a dead peer, an abort);
                   // the inline payload says why. The receiver fails its group too.
  PairClosed = 5,  // notice: a send or receive between the two ranks timed out at the
                   // sender, which closed the pair; the inline payload says why.
};

// Notices carry a text inline, as a Data message carries a small payload.
inline bool isNotice(Kind kind) {
  return kind == Kind::GroupFailed || kind == Kind::PairClosed;
}

struct Header {
  int64_t magic = kMagic;
  Kind kind = Kind::Data;
  int64_t tag = 0;
  uint64_t seq = 0;          // the sender's message counter towards this receiver
  int64_t dtype = 0;         // at::ScalarType of the sender's tensor
  int64_t numel = 0;
  int64_t codec = 0;         // CodecKind of the payload
  int64_t payloadBytes = 0;
  // Rejected only: what the receive was posted for.
  int64_t expectedDtype = 0;
  int64_t expectedNumel = 0;
  int64_t expectedCodec = 0;
  int64_t block = 0;         // quantization block of the payload codec
};
static_assert(sizeof(Header) == 96, "the wire header is 96 bytes on every rank");

// Tags from here up are qccl's own messages (user tags are 32-bit): the group's argument
// check (backend/check_exchange.h). They neither report nor take the rejections of user
// messages, which belong to the user's next call.
constexpr int64_t kFirstInternalTag = int64_t{1} << 40;
constexpr int64_t kCheckTag = kFirstInternalTag;
inline bool isUserTag(int64_t tag) {
  return tag < kFirstInternalTag;
}

// Control messages have one size, so a listener can always have the next ones posted.
// Small messages (shapes, scalars, small activations) then take one transfer instead of
// a header, a handshake for the payload and the payload.
constexpr int64_t kControlBytes = 16384;
// How many control messages a listener keeps posted per peer. Gloo writes a send only
// once its receive is posted, and a listener posts again only after it has handled a
// message: with one receive posted, each message sent before the receiver had handled
// the previous one would wait a round trip for the receive. A burst of up to this many
// messages (a batch, a pipeline step) goes out at once.
constexpr int kListenWindow = 8;
constexpr int64_t kInlineBytes = kControlBytes - static_cast<int64_t>(sizeof(Header));

inline bool carriesInline(const Header& header) {
  return (header.kind == Kind::Data || isNotice(header.kind)) && header.payloadBytes <= kInlineBytes;
}

// A payload on kPayloadSlot has a receive of its own size, which the receiver posts once
// the header has arrived: Gloo then writes it only after a notification has come back,
// so it arrives three one-way trips after the send instead of one. A payload of up to
// kStagingBytes can instead go to a receive the receiver keeps posted on
// kStagedPayloadSlot (staging_receive.h) and is copied from there: posted after the
// first payload of that size from that sender (so only pairs that exchange such
// payloads hold the buffer), and used only where Gloo reads a message shorter than its
// receive. Larger payloads are not staged: the copy would cost more than the handshake
// on a fast link, and the buffer would be as large as the payload.
constexpr int64_t kStagingBytes = 256 << 10;

inline bool fitsStaging(int64_t payloadBytes) {
  return payloadBytes > kInlineBytes && payloadBytes <= kStagingBytes;
}

// A payload too large to go inline travels as two Gloo transfers, its body and its last
// kTailBytes. Gloo does not fail the receive it is reading into when the connection
// drops (it fails only the receives still queued), so a receiver waiting on the body
// alone would learn of a dead sender only at the timeout. The tail's receive is queued
// until the body is in, so waiting on it first turns a dead sender into an error at once.
constexpr int64_t kTailBytes = 8;
static_assert(kInlineBytes > kTailBytes, "a payload that does not go inline has a body");

// Whether Gloo's transport takes a message shorter than the receive posted for it (then
// control messages carry only the bytes in use, see controlMessage()).
bool transportReadsShortMessages();

// The control message: the header, then the payload when it travels inline; all
// kControlBytes unless `shortMessage`.
at::Tensor controlMessage(const Header& header, const at::Tensor& payload, bool shortMessage);

// A large payload's two transfers: its body and its last kTailBytes.
std::vector<at::Tensor> payloadParts(const at::Tensor& payload);

} // namespace qccl::p2p
