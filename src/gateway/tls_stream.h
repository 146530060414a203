// TlsStream: a server-side TLS connection on a non-blocking TCP socket, OpenSSL reading and
// writing the socket itself (SSL_set_fd; no memory BIOs, no extra copy of the ciphertext).
// Two faces:
//  - tls_read()/tls_write(): one non-blocking call each, for the WebSocket session, which
//    waits for readiness itself exactly as it does on plain TCP;
//  - a Beast-compatible AsyncReadStream/AsyncWriteStream (async_read_some,
//    async_write_some) with tcp_stream-like deadlines (expires_at/after/never: when one
//    passes, the pending operation, or the next one, completes with beast::error::timeout),
//    and async_handshake(), for the HTTP session.
//
// Ownership: owns the socket and the SSL (which holds a reference on its SSL_CTX, so a
// certificate reload never pulls it from under a live connection). release() hands both to
// a WebSocket session on upgrade, with whatever OpenSSL has buffered.
// Threading: not thread-safe; used on the connection's loop (its executor) only.
#pragma once
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <type_traits>
#include <utility>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/error.hpp>

#include "gateway/tls_context.h"

namespace tern::gateway {

// The outcome of one non-blocking TLS read or write.
enum class TlsIo { kOk, kWantRead, kWantWrite, kClosed, kError };

// SSL_read / SSL_write once (the thread's OpenSSL error queue cleared first). kOk sets *n.
TlsIo tls_read(SSL* ssl, void* data, size_t size, size_t* n);
TlsIo tls_write(SSL* ssl, const void* data, size_t size, size_t* n);
// Sends close_notify, best effort and without waiting (not after a fatal error).
void tls_close_notify(SSL* ssl);

class TlsStream {
 public:
  using executor_type = boost::asio::any_io_executor;
  using clock = std::chrono::steady_clock;

  // `socket` is connected; it is made non-blocking and given to `ssl` (accept state).
  TlsStream(boost::asio::ip::tcp::socket&& socket, SslPtr ssl);
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  executor_type get_executor() noexcept { return socket_.get_executor(); }
  boost::asio::ip::tcp::socket& socket() { return socket_; }
  const boost::asio::ip::tcp::socket& socket() const { return socket_; }
  SSL* ssl() const { return ssl_.get(); }

  void expires_at(clock::time_point when);
  void expires_after(clock::duration d) { expires_at(clock::now() + d); }
  void expires_never();

  // The server side of the TLS handshake; Handler: void(error_code).
  template <class Handler>
  void async_handshake(Handler&& handler) {
    step<false>([](SSL* s, size_t* n) {
      *n = 0;
      return tls_handshake(s);
    }, std::forward<Handler>(handler));
  }

  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::beast::error_code, size_t)>(
        [this](auto handler, const MutableBuffers& b) {
          const boost::asio::mutable_buffer first = first_buffer(b);
          if (first.size() == 0) return complete(std::move(handler), {}, 0, true);
          step<true>([first](SSL* s, size_t* n) { return tls_read(s, first.data(), first.size(), n); },
                     std::move(handler));
        },
        token, buffers);
  }

  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::beast::error_code, size_t)>(
        [this](auto handler, const ConstBuffers& b) {
          const boost::asio::const_buffer first = first_buffer(b);
          if (first.size() == 0) return complete(std::move(handler), {}, 0, true);
          step<true>([first](SSL* s, size_t* n) { return tls_write(s, first.data(), first.size(), n); },
                     std::move(handler));
        },
        token, buffers);
  }

  // close_notify (best effort), then the TCP connection is half-closed (send side).
  void shutdown_send();
  // close_notify (best effort), then the socket is closed; pending operations end.
  void close();

  // For the upgrade: the socket and the SSL leave this stream (which is then closed).
  std::pair<boost::asio::ip::tcp::socket, SslPtr> release();

 private:
  static TlsIo tls_handshake(SSL* ssl);

  // The first non-empty buffer (one TLS record at a time: partial reads and writes).
  template <class Buffers>
  static auto first_buffer(const Buffers& b) {
    using Buffer = std::conditional_t<boost::asio::is_mutable_buffer_sequence<Buffers>::value,
                                      boost::asio::mutable_buffer, boost::asio::const_buffer>;
    for (auto it = boost::asio::buffer_sequence_begin(b); it != boost::asio::buffer_sequence_end(b); ++it) {
      Buffer buffer(*it);
      if (buffer.size() > 0) return buffer;
    }
    return Buffer();
  }

  template <class Handler>
  void complete(Handler&& handler, boost::beast::error_code ec, size_t n, bool post) {
    if (post)
      boost::asio::post(socket_.get_executor(), boost::beast::bind_handler(std::forward<Handler>(handler), ec, n));
    else
      handler(ec, n);
  }

  // Tries `io` now; on want-read/want-write waits for the socket and tries again. The
  // handler runs on its associated executor (the connection's), posted if it completes
  // inside the initiating call.
  template <bool WithSize, class Io, class Handler>
  void step(Io io, Handler handler) {
    if (failed_)
      return finish<WithSize>(std::move(handler), boost::asio::error::connection_reset, 0, true);
    run_step<WithSize>(std::move(io), std::move(handler), true);
  }

  template <bool WithSize, class Io, class Handler>
  void run_step(Io io, Handler handler, bool initiating) {
    namespace net = boost::asio;
    if (timed_out_) return finish<WithSize>(std::move(handler), boost::beast::error::timeout, 0, initiating);
    size_t n = 0;
    const TlsIo r = io(ssl_.get(), &n);
    if (r == TlsIo::kOk) return finish<WithSize>(std::move(handler), {}, n, initiating);
    if (r == TlsIo::kClosed) return finish<WithSize>(std::move(handler), net::error::eof, 0, initiating);
    if (r == TlsIo::kError) {
      failed_ = true;
      return finish<WithSize>(std::move(handler), net::error::connection_reset, 0, initiating);
    }
    const auto wait = r == TlsIo::kWantRead ? net::ip::tcp::socket::wait_read : net::ip::tcp::socket::wait_write;
    auto ex = net::get_associated_executor(handler, socket_.get_executor());
    socket_.async_wait(wait, net::bind_executor(ex, [this, io = std::move(io), handler = std::move(handler)](
                                                        const boost::system::error_code& ec) mutable {
                         if (ec) {
                           return finish<WithSize>(std::move(handler),
                                                   timed_out_ ? boost::beast::error::timeout : ec, 0, false);
                         }
                         run_step<WithSize>(std::move(io), std::move(handler), false);
                       }));
  }

  template <bool WithSize, class Handler>
  void finish(Handler&& handler, boost::beast::error_code ec, size_t n, bool post) {
    if constexpr (WithSize) return complete(std::forward<Handler>(handler), ec, n, post);
    else if (post)
      boost::asio::post(socket_.get_executor(), boost::beast::bind_handler(std::forward<Handler>(handler), ec));
    else
      handler(ec);
  }

  boost::asio::ip::tcp::socket socket_;
  SslPtr ssl_;
  std::unique_ptr<boost::asio::steady_timer> timer_;  // while a deadline is set
  uint64_t timer_generation_ = 0;  // a wait from an older deadline is ignored
  bool timed_out_ = false;
  bool failed_ = false;  // a fatal TLS error: no close_notify, no more I/O
};

}  // namespace tern::gateway
