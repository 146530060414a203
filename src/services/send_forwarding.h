// SendForwarding: the wire form of a send that one node hands to the node that sequences its
// conversation (bus/bus.h route() and request(); docs/scaling.md "One sequencing node per
// conversation"), and of the answer that comes back. Each node then sequences only the
// conversations it owns, so that nodes do not race for the same next seq.
//
// The request carries the authenticated sending device and the parsed send frame; the
// receiving node trusts it as it trusts everything else in the shared Redis (the nodes and
// Redis are one trust domain). Both forms are versioned and decoded with bounds checks: a
// malformed payload is refused with an error, never trusted half way.
//
// Stateless functions; any thread.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "base/byte_codec.h"
#include "base/ids.h"
#include "base/result.h"
#include "proto/frames.h"
#include "services/sequencer_core.h"

namespace tern::services::send_forwarding {

std::string encode_request(const DeviceRef& device, const proto::SendFrame& frame);
Result<std::pair<DeviceRef, proto::SendFrame>> decode_request(std::string_view payload);

// The answer: the SentInfo of the send, or the error it got on the owning node.
std::string encode_response(const Result<SentInfo>& result);
// A malformed answer (or an empty one: the node was not serving) reads as `unavailable`.
Result<SentInfo> decode_response(std::string_view payload);

// The error form of an answer, shared with channel_forwarding.h: its code, message and detail.
void put_error(std::string& out, const Error& e);
// The error after the answer's kind byte; nullopt if malformed (the reader is then not ok).
std::optional<Error> read_error(ByteReader& r);

}  // namespace tern::services::send_forwarding
