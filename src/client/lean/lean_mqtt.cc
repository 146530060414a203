#include "client/lean/lean_mqtt.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

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
    : io_(io), scratch_(scratch), handler_(handler), limits_(limits), socket_(io) {}

MqttConnection::~MqttConnection() {
  boost::system::error_code ec;
  socket_.close(ec);
}

void MqttConnection::reset_socket(bool abort) {
  ++gen_;
  boost::system::error_code ec;
  if (socket_.is_open()) {
    if (abort) socket_.set_option(asio::socket_base::linger(true, 0), ec);
    socket_.close(ec);
  }
  state_ = State::kClosed;
  writing_ = false;
  flush_posted_ = false;
  close_after_write_ = false;
  // Swap rather than clear: an idle connection keeps its socket and little else.
  std::string().swap(pending_);
  std::string().swap(out_);
  std::string().swap(inflight_);
}

void MqttConnection::open(const MqttTarget& target, const MqttConnect& connect) {
  reset_socket(true);
  const uint64_t gen = gen_;
  state_ = State::kConnecting;
  boost::system::error_code ec;
  socket_.open(target.server.protocol(), ec);
  if (ec) {
    asio::post(io_, [this, gen] { if (gen == gen_) fail("socket"); });
    return;
  }
  if (target.source) {
#ifdef IP_BIND_ADDRESS_NO_PORT
    int one = 1;
    ::setsockopt(socket_.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
    socket_.bind(asio::ip::tcp::endpoint(*target.source, 0), ec);
    if (ec) {
      asio::post(io_, [this, gen] { if (gen == gen_) fail("bind"); });
      return;
    }
  }
  mqtt_append_connect(out_, connect);
  last_queued_us_ = mono_us();
  socket_.async_connect(target.server, [this, gen](const boost::system::error_code& cec) {
    if (gen != gen_) return;
    if (cec) return fail("connect");
    boost::system::error_code oec;
    socket_.set_option(asio::ip::tcp::no_delay(true), oec);
    socket_.non_blocking(true, oec);
    state_ = State::kAwaitConnack;
    start_write();
    start_read();
  });
}

template <class F>
bool MqttConnection::queue(size_t size_hint, F&& append) {
  if (state_ != State::kOpen || close_after_write_) return false;
  if (queued_bytes() + size_hint > limits_.max_queued_bytes) return false;
  append(out_);
  last_queued_us_ = mono_us();
  schedule_flush();
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
  if (state_ == State::kClosed) return;
  if (mode == CloseMode::kGraceful && state_ == State::kOpen && !close_after_write_) {
    mqtt_append_disconnect(out_);
    close_after_write_ = true;
    schedule_flush();
    return;
  }
  reset_socket(mode == CloseMode::kAbort);
}

void MqttConnection::schedule_flush() {
  if (writing_ || flush_posted_) return;
  flush_posted_ = true;
  const uint64_t gen = gen_;
  // Posted, not immediate: every packet queued by the current handler run shares one write.
  asio::post(io_, [this, gen] {
    if (gen != gen_) return;
    flush_posted_ = false;
    start_write();
  });
}

void MqttConnection::start_write() {
  if (writing_ || out_.empty() || state_ == State::kConnecting || state_ == State::kClosed) return;
  writing_ = true;
  inflight_.swap(out_);
  const uint64_t gen = gen_;
  asio::async_write(socket_, asio::buffer(inflight_), [this, gen](const boost::system::error_code& ec, size_t) {
    if (gen != gen_) return;
    writing_ = false;
    inflight_.clear();
    if (ec) return fail("write");
    if (!out_.empty()) return start_write();
    if (close_after_write_) reset_socket(false);
  });
}

void MqttConnection::start_read() {
  const uint64_t gen = gen_;
  socket_.async_wait(asio::ip::tcp::socket::wait_read, [this, gen](const boost::system::error_code& ec) {
    if (gen != gen_) return;
    if (ec) return fail("read");
    on_readable();
  });
}

void MqttConnection::on_readable() {
  const uint64_t gen = gen_;
  // Bounded: a connection that always has data must not starve the others on this thread.
  for (int round = 0; round < 4; ++round) {
    boost::system::error_code ec;
    const size_t n = socket_.read_some(asio::buffer(scratch_.bytes), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) break;
    if (ec == asio::error::eof) return fail("eof");
    if (ec) return fail("read");
    if (close_after_write_) continue;  // closing: drain and drop
    if (!consume(scratch_.bytes.data(), n)) return;
    if (gen != gen_) return;
    if (n < scratch_.bytes.size()) break;
  }
  start_read();
}

bool MqttConnection::consume(const char* data, size_t n) {
  const uint64_t gen = gen_;
  // As in WsConnection: a partial packet is moved out of pending_ first, because a handler may
  // close or reopen this connection (which resets pending_) while views into it are live.
  std::string joined;
  std::string_view in(data, n);
  const bool from_pending = !pending_.empty();
  if (from_pending) {
    joined.swap(pending_);
    joined.append(data, n);
    in = joined;
  }
  size_t used = 0;
  while (used < in.size()) {
    const auto hr = mqtt_parse_header(in.substr(used), limits_.max_packet_bytes);
    if (hr.status == MqttParse::kError) {
      fail("protocol");
      return false;
    }
    if (hr.status == MqttParse::kNeedMore) break;
    const auto& h = hr.header;
    if (in.size() - used < h.total_len()) break;
    const std::string_view body = in.substr(used + h.header_len, h.remaining_len);
    used += h.total_len();
    if (!handle_packet(h, body)) return false;
    if (gen != gen_) return false;
  }
  if (used < in.size()) {
    if (from_pending && used == 0) {
      pending_.swap(joined);
    } else {
      pending_.assign(in.substr(used));
    }
  }
  return true;
}

bool MqttConnection::handle_packet(const MqttHeader& h, std::string_view body) {
  if (state_ == State::kAwaitConnack) {
    const auto ack = h.type == MqttType::kConnack ? mqtt_decode_connack(body) : std::nullopt;
    if (!ack) {
      fail("protocol");
      return false;
    }
    if (ack->return_code != 0) {
      fail("connack " + std::to_string(ack->return_code));
      return false;
    }
    state_ = State::kOpen;
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

void MqttConnection::fail(std::string_view reason) {
  if (state_ == State::kClosed) return;
  const std::string why(reason);
  reset_socket(false);
  handler_.on_mqtt_closed(*this, why);
}

}  // namespace tern::client::lean
