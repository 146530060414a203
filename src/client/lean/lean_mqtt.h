// A lean MQTT 3.1.1 client for tern-bench's `--protocol mqtt` mode, so that the same
// generator and verifier measure an MQTT broker (mosquitto) next to ternd.
//
// Two layers:
//   - the packet codec, as pure functions (no I/O, no allocation except into the caller's
//     buffer; thread-safe): the fixed header with its remaining-length varint, and the
//     packets a QoS 0/1 publisher-subscriber needs: CONNECT, CONNACK, SUBSCRIBE, SUBACK,
//     PUBLISH, PUBACK, PINGREQ, PINGRESP, DISCONNECT (OASIS MQTT 3.1.1, sections 2 and 3);
//   - MqttConnection: one client connection on an Asio io_context. The socket plumbing is
//     the LeanStream (lean_stream.h) it shares with WsConnection: a socket, the bytes of a
//     partial packet (usually none), a bounded write queue that is empty at rest; reads land
//     in the thread's shared ReadScratch and complete packets are handed to the Handler
//     straight out of it; packets queued during one handler run go out in one write. This
//     class adds the MQTT session: CONNECT/CONNACK and packet dispatch.
//
// Not supported (not needed by the benchmark): QoS 2 flows, will messages, user name and
// password, TLS, MQTT 5. A QoS 2 PUBLISH from the broker is handed over like any other; the
// caller decides (tern-bench only subscribes with QoS 1, so a broker never sends one).
//
// Thread affinity of MqttConnection: as WsConnection's. It and its ReadScratch belong to the
// thread running their io_context; every call and Handler callback happens on it; destroy it
// only once its io_context has stopped running. Handler callbacks may call any method,
// including close() and open().
#pragma once
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "client/lean/lean_stream.h"

namespace tern::client::lean {

// ---- codec ----

enum class MqttType : uint8_t {
  kConnect = 1,
  kConnack = 2,
  kPublish = 3,
  kPuback = 4,
  kPubrec = 5,
  kPubrel = 6,
  kPubcomp = 7,
  kSubscribe = 8,
  kSuback = 9,
  kUnsubscribe = 10,
  kUnsuback = 11,
  kPingreq = 12,
  kPingresp = 13,
  kDisconnect = 14,
};

inline constexpr uint32_t kMqttMaxRemainingLength = 268'435'455;  // 4 varint bytes

enum class MqttParse { kOk, kNeedMore, kError };

// Remaining length: 7 bits per byte, least significant group first, at most 4 bytes.
void mqtt_append_remaining_length(std::string& out, uint32_t n);  // n ≤ kMqttMaxRemainingLength
struct MqttVarint {
  MqttParse status = MqttParse::kNeedMore;
  uint32_t value = 0;
  size_t used = 0;  // bytes of the varint
};
MqttVarint mqtt_parse_remaining_length(std::string_view in);

struct MqttHeader {
  MqttType type = MqttType::kConnect;
  uint8_t flags = 0;           // low nibble of the first byte
  size_t header_len = 0;       // 1 + varint bytes
  uint32_t remaining_len = 0;  // bytes after the fixed header
  size_t total_len() const { return header_len + remaining_len; }
};
struct MqttHeaderResult {
  MqttParse status = MqttParse::kNeedMore;
  MqttHeader header;
  const char* error = nullptr;  // static text when status == kError
};
// Parses the fixed header at the start of `in`. Errors: type 0 or 15, flags other than the
// ones 3.1.1 fixes for the type (2.2.2; PUBLISH: QoS 3), a varint over 4 bytes, or a packet
// larger than `max_packet` in total.
MqttHeaderResult mqtt_parse_header(std::string_view in, size_t max_packet);

struct MqttConnect {
  std::string_view client_id;
  uint16_t keepalive_s = 60;
  bool clean_session = true;
};
void mqtt_append_connect(std::string& out, const MqttConnect& c);
// QoS 0..1 only; `packet_id` is ignored for QoS 0 and must be non-zero otherwise.
void mqtt_append_publish(std::string& out, std::string_view topic, std::string_view payload, int qos,
                         uint16_t packet_id, bool dup = false, bool retain = false);
// One topic filter with its requested QoS.
void mqtt_append_subscribe(std::string& out, uint16_t packet_id, std::string_view filter, int qos);
void mqtt_append_puback(std::string& out, uint16_t packet_id);
void mqtt_append_pingreq(std::string& out);
void mqtt_append_disconnect(std::string& out);

// Bodies (the bytes after the fixed header) of the packets a client receives. Each checks
// the length the type prescribes.
struct MqttConnack {
  bool session_present = false;
  uint8_t return_code = 0;  // 0 accepted; 1..5 refused (3.2.2.3)
};
std::optional<MqttConnack> mqtt_decode_connack(std::string_view body);
struct MqttSuback {
  uint16_t packet_id = 0;
  std::string_view return_codes;  // one per filter: 0x00..0x02 granted QoS, 0x80 failure
};
std::optional<MqttSuback> mqtt_decode_suback(std::string_view body);
struct MqttPublish {
  std::string_view topic;
  std::string_view payload;
  uint16_t packet_id = 0;  // 0 for QoS 0
  int qos = 0;
  bool dup = false;
  bool retain = false;
};
// `flags` from the fixed header. Views point into `body`.
std::optional<MqttPublish> mqtt_decode_publish(uint8_t flags, std::string_view body);
// PUBACK (and the other packet-id-only acknowledgements).
std::optional<uint16_t> mqtt_decode_packet_id(std::string_view body);

// ---- connection ----

struct MqttTarget {
  asio::ip::tcp::endpoint server;
  // When set, bind to this source address first (port picked at connect time), as WsTarget.
  std::optional<asio::ip::address> source;
};

struct MqttLimits {
  size_t max_packet_bytes = 1 << 20;  // one packet from the broker
  // Write queue bound. Overflow policy: the send call refuses the packet and returns false;
  // the caller decides (tern-bench counts a local error and does not consider it sent).
  size_t max_queued_bytes = 4 << 20;
};

// Implements LeanStream::Owner privately: only its own stream calls those methods.
class MqttConnection : private LeanStream::Owner {
 public:
  // LeanStream::Phase under MQTT names (same order: state() casts).
  enum class State { kClosed, kConnecting, kAwaitConnack, kOpen };
  enum class CloseMode {
    kGraceful,  // DISCONNECT, then the socket is closed once it is written
    kAbort,     // SO_LINGER 0: RST at once
  };

  class Handler {
   public:
    // CONNACK accepted.
    virtual void on_mqtt_open(MqttConnection& c, bool session_present) = 0;
    // One PUBLISH from the broker; views valid only during the call. The handler sends the
    // PUBACK (puback()) for QoS 1: the connection does not acknowledge on its own.
    virtual void on_mqtt_publish(MqttConnection& c, const MqttPublish& p) = 0;
    virtual void on_mqtt_puback(MqttConnection& c, uint16_t packet_id) = 0;
    virtual void on_mqtt_suback(MqttConnection& c, const MqttSuback& s) = 0;
    // The connection failed or the broker closed it; `reason` is short and stable enough to
    // count by ("connect", "eof", "connack 5", "protocol"). Not called after close().
    virtual void on_mqtt_closed(MqttConnection& c, std::string_view reason) = 0;

   protected:
    ~Handler() = default;
  };

  MqttConnection(asio::io_context& io, ReadScratch& scratch, Handler& handler, MqttLimits limits = {});
  ~MqttConnection();
  MqttConnection(const MqttConnection&) = delete;
  MqttConnection& operator=(const MqttConnection&) = delete;

  // Starts connect + CONNECT; any previous connection is aborted first. The outcome arrives as
  // on_mqtt_open or on_mqtt_closed.
  void open(const MqttTarget& target, const MqttConnect& connect);
  // Queue one packet; false when not open or when the write queue is full.
  bool publish(std::string_view topic, std::string_view payload, int qos, uint16_t packet_id, bool dup);
  bool subscribe(uint16_t packet_id, std::string_view filter, int qos);
  bool puback(uint16_t packet_id);
  bool pingreq();
  // Closes without calling the handler. Idempotent.
  void close(CloseMode mode);

  State state() const { return static_cast<State>(stream_.phase()); }
  size_t queued_bytes() const { return stream_.queued_bytes(); }
  // Monotonic µs of the last packet queued (for keep-alive pings).
  int64_t last_queued_us() const { return last_queued_us_; }

 private:
  // LeanStream::Owner
  size_t on_stream_input(std::string_view in) override;
  void on_stream_failed(std::string_view reason) override;

  template <class F>
  bool queue(size_t size_hint, F&& append);
  bool handle_packet(const MqttHeader& h, std::string_view body);
  void fail(std::string_view reason) { stream_.fail(reason); }

  Handler& handler_;
  MqttLimits limits_;
  LeanStream stream_;
  int64_t last_queued_us_ = 0;
};

}  // namespace tern::client::lean
