// LeanStream: the socket plumbing shared by the lean protocol clients (WsConnection,
// MqttConnection), which differ only in what the bytes mean. It owns
//   - the TCP socket and its connect (with the optional source address);
//   - optionally TLS over it (open() with a LeanTls): an asio ssl::stream made for each
//     connection, its handshake after the connect and before the protocol's opening exchange.
//     The plain path pays one null-pointer test per read or write call, nothing per byte, and
//     no TLS memory: the ssl::stream (OpenSSL's SSL object plus Asio's two 17 KiB record
//     buffers) exists only for TLS connections;
//   - the write side: bytes queued by the protocol (`out_`) and the bytes of the one write in
//     flight (`inflight_`); everything queued during one handler run goes out in one write;
//   - the read side: a bounded readable loop that reads into the thread's ReadScratch and the
//     bytes of an incomplete protocol unit (`pending_`, usually empty) kept between reads;
//   - the generation counter that lets completions of an older connection know they are stale.
// The protocol owns the stream (a member) and implements Owner: it parses input, learns of
// failures, and clears its own per-connection state whenever the stream resets.
//
// Thread affinity: the stream, its Owner and its ReadScratch belong to the thread running
// their io_context; every call and every Owner callback happens on it. The stream must
// outlive any pending operation: destroy it only once its io_context has stopped running (or
// will never run again). Owner callbacks may call any method, including reset() and open().
#pragma once
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <memory>
#include <vector>

#include "client/lean/lean_tls.h"

namespace tern::client::lean {

namespace asio = boost::asio;

// One read buffer shared by every connection of a thread; must outlive them. Complete units
// are parsed straight out of it, so a message costs no copy and no allocation per connection.
struct ReadScratch {
  std::vector<char> bytes = std::vector<char>(64 * 1024);
};

class LeanStream {
 public:
  // kHandshake: connected, the protocol's own opening exchange (upgrade, CONNECT/CONNACK) is
  // under way; kOpen: the protocol said so with mark_open(). Both read and write.
  enum class Phase { kClosed, kConnecting, kHandshake, kOpen };

  class Owner {
   public:
    // `in` is the partial unit kept from earlier reads followed by the new bytes; views into
    // it are valid only during the call. Returns how many bytes were consumed (the rest is kept
    // for the next read). May fail, close or reopen the stream; the stream then notices by its
    // generation and ignores the return value.
    virtual size_t on_stream_input(std::string_view in) = 0;
    // The stream failed (connect, read, write, eof, or the owner's fail()); it has already
    // reset. `reason` stays valid during the call.
    virtual void on_stream_failed(std::string_view reason) = 0;
    // The stream has just reset (socket closed, buffers released): the owner drops its own
    // per-connection state, if it keeps any. Called on every reset, with or without a failure.
    virtual void on_stream_reset() {}

   protected:
    ~Owner() = default;
  };

  LeanStream(asio::io_context& io, ReadScratch& scratch, Owner& owner);
  ~LeanStream();
  LeanStream(const LeanStream&) = delete;
  LeanStream& operator=(const LeanStream&) = delete;

  // Aborts any previous connection, then connects (binding to `source` first when set) and,
  // with `tls`, does the TLS handshake (certificate verified, named `tls->host`; `tls` must
  // outlive the stream). `hello` is the first thing written once the connection is up (the
  // upgrade request or CONNECT). The outcome: reads start and input reaches the Owner, or
  // on_stream_failed ("connect", "tls: certificate did not verify", "tls handshake", ...).
  void open(const asio::ip::tcp::endpoint& server, const std::optional<asio::ip::address>& source, std::string hello,
            const LeanTls* tls = nullptr);
  // Closes the socket (with `abort`: SO_LINGER 0, so RST and no TIME_WAIT on our side) and
  // releases the buffers. Bumps the generation; Owner::on_stream_reset, no failure callback.
  void reset(bool abort);
  // Resets, then reports `reason` to the Owner. Does nothing when already closed.
  void fail(std::string_view reason);

  // Appends to the write queue with `append(std::string&)` and schedules the write. The caller
  // checks its bound (queued_bytes()) first.
  template <class Append>
  void queue(Append&& append) {
    append(out_);
    schedule_flush();
  }
  // Closes without a failure callback. Gracefully only when open and not already closing:
  // `goodbye()` queues the protocol's farewell (close frame, DISCONNECT), and once everything
  // queued is written the stream resets; input read meanwhile is dropped, since the owner
  // asked to be done with the connection. Otherwise (or with `abort`) it resets at once.
  template <class Goodbye>
  void close(bool abort, Goodbye&& goodbye) {
    if (phase_ == Phase::kClosed) return;
    if (!abort && phase_ == Phase::kOpen && !close_after_write_) {
      goodbye();
      close_after_write_ = true;
      return;
    }
    reset(abort);
  }
  // A graceful close is under way: nothing more may be queued.
  bool closing() const { return close_after_write_; }

  // The protocol's opening exchange succeeded (from kHandshake).
  void mark_open() { phase_ = Phase::kOpen; }
  Phase phase() const { return phase_; }
  // Changes on every open/reset: a caller that runs user callbacks compares it before and
  // after to learn whether the connection it was parsing for still exists.
  uint64_t generation() const { return gen_; }
  size_t queued_bytes() const { return out_.size() + inflight_.size(); }
  bool tls() const { return tls_ != nullptr; }

 private:
  using TlsSocket = asio::ssl::stream<asio::ip::tcp::socket>;
  // The TCP socket of the current connection: the ssl::stream's for TLS, else socket_.
  asio::ip::tcp::socket& tcp() { return tls_ ? tls_->next_layer() : socket_; }
  void start_tls();
  void connected();
  void schedule_flush();
  void start_write();
  void start_read();
  void on_readable();
  // False when the stream was reset meanwhile.
  bool consume(const char* data, size_t n);

  asio::io_context& io_;
  ReadScratch& scratch_;
  Owner& owner_;
  asio::ip::tcp::socket socket_;  // plain connections
  // TLS connections: made by open(), dropped by reset(). Shared because a pending Asio SSL
  // operation refers to the stream until it completes (with operation_aborted after reset):
  // each handler holds a reference, so reset() never destroys a stream in use.
  std::shared_ptr<TlsSocket> tls_;
  const LeanTls* tls_cfg_ = nullptr;
  Phase phase_ = Phase::kClosed;
  // Bumped on every open/reset: completions of an older connection see a different value and
  // do nothing.
  uint64_t gen_ = 0;
  std::string pending_;   // bytes of an incomplete unit
  std::string out_;       // bytes waiting for the current write to finish
  std::string inflight_;  // bytes being written
  bool writing_ = false;
  bool flush_posted_ = false;
  bool close_after_write_ = false;
};

}  // namespace tern::client::lean
