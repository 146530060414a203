#include "client/lean/lean_mqtt.h"

#include "base/clock.h"

namespace tern::client::lean {
namespace {

uint8_t first_byte(MqttType t, uint8_t flags) { return static_cast<uint8_t>((static_cast<uint8_t>(t) << 4) | flags); }

void put_u16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xFF));
}

uint16_t get_u16(std::string_view s, size_t at) {
  return static_cast<uint16_t>((static_cast<uint8_t>(s[at]) << 8) | static_cast<uint8_t>(s[at + 1]));
}

void put_string(std::string& out, std::string_view s) {
  put_u16(out, static_cast<uint16_t>(s.size()));
  out.append(s);
}

// The flags 3.1.1 fixes for each type (2.2.2); PUBLISH's are free (checked separately).
int fixed_flags(MqttType t) {
  switch (t) {
    case MqttType::kPubrel:
    case MqttType::kSubscribe:
    case MqttType::kUnsubscribe: return 0x2;
    case MqttType::kPublish: return -1;
    default: return 0x0;
  }
}

}  // namespace

// ---- codec ----

void mqtt_append_remaining_length(std::string& out, uint32_t n) {
  do {
    uint8_t b = n & 0x7F;
    n >>= 7;
    if (n > 0) b |= 0x80;
    out.push_back(static_cast<char>(b));
  } while (n > 0);
}

MqttVarint mqtt_parse_remaining_length(std::string_view in) {
  MqttVarint r;
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) {
    if (i >= in.size()) return r;  // kNeedMore
    const auto b = static_cast<uint8_t>(in[i]);
    value |= static_cast<uint32_t>(b & 0x7F) << (7 * i);
    if ((b & 0x80) == 0) {
      r.status = MqttParse::kOk;
      r.value = value;
      r.used = i + 1;
      return r;
    }
  }
  r.status = MqttParse::kError;  // a fifth byte would be needed
  return r;
}

MqttHeaderResult mqtt_parse_header(std::string_view in, size_t max_packet) {
  MqttHeaderResult r;
  if (in.empty()) return r;
  const auto b0 = static_cast<uint8_t>(in[0]);
  const uint8_t type = b0 >> 4;
  const uint8_t flags = b0 & 0x0F;
  auto error = [&](const char* e) {
    r.status = MqttParse::kError;
    r.error = e;
    return r;
  };
  if (type == 0 || type == 15) return error("reserved packet type");
  const auto t = static_cast<MqttType>(type);
  const int want = fixed_flags(t);
  if (want >= 0 && flags != want) return error("bad fixed-header flags");
  if (t == MqttType::kPublish && ((flags >> 1) & 0x3) == 3) return error("PUBLISH with QoS 3");
  const MqttVarint v = mqtt_parse_remaining_length(in.substr(1));
  if (v.status == MqttParse::kNeedMore) return r;
  if (v.status == MqttParse::kError) return error("remaining length over 4 bytes");
  r.header.type = t;
  r.header.flags = flags;
  r.header.header_len = 1 + v.used;
  r.header.remaining_len = v.value;
  if (r.header.total_len() > max_packet) return error("packet too large");
  r.status = MqttParse::kOk;
  return r;
}

void mqtt_append_connect(std::string& out, const MqttConnect& c) {
  // Variable header: protocol name "MQTT", level 4, flags, keep-alive; payload: client id.
  const uint32_t len = 10 + 2 + static_cast<uint32_t>(c.client_id.size());
  out.push_back(static_cast<char>(first_byte(MqttType::kConnect, 0)));
  mqtt_append_remaining_length(out, len);
  put_string(out, "MQTT");
  out.push_back(4);
  out.push_back(static_cast<char>(c.clean_session ? 0x02 : 0x00));
  put_u16(out, c.keepalive_s);
  put_string(out, c.client_id);
}

void mqtt_append_publish(std::string& out, std::string_view topic, std::string_view payload, int qos,
                         uint16_t packet_id, bool dup, bool retain) {
  const uint8_t flags = static_cast<uint8_t>((dup && qos > 0 ? 0x8 : 0) | ((qos & 0x3) << 1) | (retain ? 1 : 0));
  const auto len = static_cast<uint32_t>(2 + topic.size() + (qos > 0 ? 2 : 0) + payload.size());
  out.push_back(static_cast<char>(first_byte(MqttType::kPublish, flags)));
  mqtt_append_remaining_length(out, len);
  put_string(out, topic);
  if (qos > 0) put_u16(out, packet_id);
  out.append(payload);
}

void mqtt_append_subscribe(std::string& out, uint16_t packet_id, std::string_view filter, int qos) {
  out.push_back(static_cast<char>(first_byte(MqttType::kSubscribe, 0x2)));
  mqtt_append_remaining_length(out, static_cast<uint32_t>(2 + 2 + filter.size() + 1));
  put_u16(out, packet_id);
  put_string(out, filter);
  out.push_back(static_cast<char>(qos & 0x3));
}

void mqtt_append_puback(std::string& out, uint16_t packet_id) {
  out.push_back(static_cast<char>(first_byte(MqttType::kPuback, 0)));
  out.push_back(2);
  put_u16(out, packet_id);
}

void mqtt_append_pingreq(std::string& out) {
  out.push_back(static_cast<char>(first_byte(MqttType::kPingreq, 0)));
  out.push_back(0);
}

void mqtt_append_disconnect(std::string& out) {
  out.push_back(static_cast<char>(first_byte(MqttType::kDisconnect, 0)));
  out.push_back(0);
}

std::optional<MqttConnack> mqtt_decode_connack(std::string_view body) {
  if (body.size() != 2) return std::nullopt;
  const auto flags = static_cast<uint8_t>(body[0]);
  if (flags & 0xFE) return std::nullopt;  // reserved bits
  return MqttConnack{(flags & 1) != 0, static_cast<uint8_t>(body[1])};
}

std::optional<MqttSuback> mqtt_decode_suback(std::string_view body) {
  if (body.size() < 3) return std::nullopt;
  MqttSuback s{get_u16(body, 0), body.substr(2)};
  for (char c : s.return_codes) {
    const auto code = static_cast<uint8_t>(c);
    if (code > 2 && code != 0x80) return std::nullopt;
  }
  return s;
}

std::optional<MqttPublish> mqtt_decode_publish(uint8_t flags, std::string_view body) {
  MqttPublish p;
  p.qos = (flags >> 1) & 0x3;
  p.dup = (flags & 0x8) != 0;
  p.retain = (flags & 0x1) != 0;
  if (p.qos == 3 || (p.qos == 0 && p.dup)) return std::nullopt;
  if (body.size() < 2) return std::nullopt;
  const size_t tlen = get_u16(body, 0);
  size_t at = 2 + tlen;
  if (body.size() < at) return std::nullopt;
  p.topic = body.substr(2, tlen);
  if (p.qos > 0) {
    if (body.size() < at + 2) return std::nullopt;
    p.packet_id = get_u16(body, at);
    if (p.packet_id == 0) return std::nullopt;
    at += 2;
  }
  p.payload = body.substr(at);
  return p;
}

std::optional<uint16_t> mqtt_decode_packet_id(std::string_view body) {
  if (body.size() != 2) return std::nullopt;
  const uint16_t id = get_u16(body, 0);
  if (id == 0) return std::nullopt;
  return id;
}

// ---- connection ----

MqttConnection::MqttConnection(asio::io_context& io, ReadScratch& scratch, Handler& handler, MqttLimits limits)
    : handler_(handler), limits_(limits), stream_(io, scratch, *this) {}

MqttConnection::~MqttConnection() = default;

static_assert(static_cast<int>(MqttConnection::State::kAwaitConnack) == static_cast<int>(LeanStream::Phase::kHandshake) &&
              static_cast<int>(MqttConnection::State::kOpen) == static_cast<int>(LeanStream::Phase::kOpen));

void MqttConnection::on_stream_failed(std::string_view reason) { handler_.on_mqtt_closed(*this, reason); }

void MqttConnection::open(const MqttTarget& target, const MqttConnect& connect) {
  std::string hello;
  mqtt_append_connect(hello, connect);
  last_queued_us_ = mono_us();
  stream_.open(target.server, target.source, std::move(hello));
}

template <class F>
bool MqttConnection::queue(size_t size_hint, F&& append) {
  if (state() != State::kOpen || stream_.closing()) return false;
  if (stream_.queued_bytes() + size_hint > limits_.max_queued_bytes) return false;
  stream_.queue(append);
  last_queued_us_ = mono_us();
  return true;
}

bool MqttConnection::publish(std::string_view topic, std::string_view payload, int qos, uint16_t packet_id, bool dup) {
  return queue(topic.size() + payload.size() + 9,
               [&](std::string& o) { mqtt_append_publish(o, topic, payload, qos, packet_id, dup); });
}

bool MqttConnection::subscribe(uint16_t packet_id, std::string_view filter, int qos) {
  return queue(filter.size() + 10, [&](std::string& o) { mqtt_append_subscribe(o, packet_id, filter, qos); });
}

bool MqttConnection::puback(uint16_t packet_id) {
  return queue(4, [&](std::string& o) { mqtt_append_puback(o, packet_id); });
}

bool MqttConnection::pingreq() {
  return queue(2, [](std::string& o) { mqtt_append_pingreq(o); });
}

void MqttConnection::close(CloseMode mode) {
  // Not bounded by max_queued_bytes (as before): a DISCONNECT is two bytes and the last thing
  // queued.
  stream_.close(mode == CloseMode::kAbort,
                [this] { stream_.queue([](std::string& o) { mqtt_append_disconnect(o); }); });
}

size_t MqttConnection::on_stream_input(std::string_view in) {
  const uint64_t gen = stream_.generation();
  size_t used = 0;
  while (used < in.size()) {
    const auto hr = mqtt_parse_header(in.substr(used), limits_.max_packet_bytes);
    if (hr.status == MqttParse::kError) {
      fail("protocol");
      break;
    }
    if (hr.status == MqttParse::kNeedMore) break;
    const auto& h = hr.header;
    if (in.size() - used < h.total_len()) break;
    const std::string_view body = in.substr(used + h.header_len, h.remaining_len);
    used += h.total_len();
    // After a failure or a close by the handler the stream has a new generation and ignores
    // what is returned.
    if (!handle_packet(h, body)) break;
    if (gen != stream_.generation()) break;
  }
  return used;
}

bool MqttConnection::handle_packet(const MqttHeader& h, std::string_view body) {
  if (stream_.phase() == LeanStream::Phase::kHandshake) {
    const auto ack = h.type == MqttType::kConnack ? mqtt_decode_connack(body) : std::nullopt;
    if (!ack) {
      fail("protocol");
      return false;
    }
    if (ack->return_code != 0) {
      fail("connack " + std::to_string(ack->return_code));
      return false;
    }
    stream_.mark_open();
    handler_.on_mqtt_open(*this, ack->session_present);
    return true;
  }
  switch (h.type) {
    case MqttType::kPublish: {
      const auto p = mqtt_decode_publish(h.flags, body);
      if (!p) break;
      handler_.on_mqtt_publish(*this, *p);
      return true;
    }
    case MqttType::kPuback: {
      const auto id = mqtt_decode_packet_id(body);
      if (!id) break;
      handler_.on_mqtt_puback(*this, *id);
      return true;
    }
    case MqttType::kSuback: {
      const auto s = mqtt_decode_suback(body);
      if (!s) break;
      handler_.on_mqtt_suback(*this, *s);
      return true;
    }
    case MqttType::kPingresp:
      if (!body.empty()) break;
      return true;
    default:
      break;  // nothing else may come from a broker to this client
  }
  fail("protocol");
  return false;
}

}  // namespace tern::client::lean
