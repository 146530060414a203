#include "gateway/tls_stream.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace tern::gateway {

namespace net = boost::asio;

namespace {

TlsIo classify(SSL* ssl, int ret) {
  switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_WANT_READ:
      return TlsIo::kWantRead;
    case SSL_ERROR_WANT_WRITE:
      return TlsIo::kWantWrite;
    case SSL_ERROR_ZERO_RETURN:
      return TlsIo::kClosed;
    default:
      ERR_clear_error();  // a peer's bad record or a reset: the connection ends, nothing to log
      return TlsIo::kError;
  }
}

}  // namespace

TlsIo tls_read(SSL* ssl, void* data, size_t size, size_t* n) {
  ERR_clear_error();
  const int ret = SSL_read_ex(ssl, data, size, n);
  return ret == 1 ? TlsIo::kOk : classify(ssl, ret);
}

TlsIo tls_write(SSL* ssl, const void* data, size_t size, size_t* n) {
  ERR_clear_error();
  const int ret = SSL_write_ex(ssl, data, size, n);
  return ret == 1 ? TlsIo::kOk : classify(ssl, ret);
}

void tls_close_notify(SSL* ssl) {
  if (!ssl || !SSL_is_init_finished(ssl)) return;
  ERR_clear_error();
  (void)SSL_shutdown(ssl);  // non-blocking: what does not fit in the socket is dropped
  ERR_clear_error();
}

TlsIo TlsStream::tls_handshake(SSL* ssl) {
  ERR_clear_error();
  const int ret = SSL_do_handshake(ssl);
  return ret == 1 ? TlsIo::kOk : classify(ssl, ret);
}

TlsStream::TlsStream(net::ip::tcp::socket&& socket, SslPtr ssl) : socket_(std::move(socket)), ssl_(std::move(ssl)) {
  boost::system::error_code ec;
  socket_.non_blocking(true, ec);
  if (ec || !ssl_ || SSL_set_fd(ssl_.get(), socket_.native_handle()) != 1) {
    failed_ = true;
    return;
  }
  SSL_set_accept_state(ssl_.get());
}

void TlsStream::expires_at(clock::time_point when) {
  timed_out_ = false;
  if (!timer_) timer_ = std::make_unique<net::steady_timer>(socket_.get_executor());
  timer_->expires_at(when);
  // The timer belongs to this stream: a cancelled wait (re-armed, or the stream destroyed)
  // must not touch it.
  const uint64_t generation = ++timer_generation_;
  timer_->async_wait([this, generation](const boost::system::error_code& ec) {
    if (ec || generation != timer_generation_) return;
    timed_out_ = true;
    boost::system::error_code ignored;
    socket_.cancel(ignored);
  });
}

void TlsStream::expires_never() {
  timed_out_ = false;
  ++timer_generation_;
  if (timer_) timer_->cancel();
}

void TlsStream::shutdown_send() {
  if (!failed_) tls_close_notify(ssl_.get());
  boost::system::error_code ec;
  socket_.shutdown(net::ip::tcp::socket::shutdown_send, ec);
}

void TlsStream::close() {
  if (!failed_) tls_close_notify(ssl_.get());
  failed_ = true;
  boost::system::error_code ec;
  socket_.shutdown(net::ip::tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  if (timer_) timer_->cancel();
}

std::pair<net::ip::tcp::socket, SslPtr> TlsStream::release() {
  if (timer_) timer_->cancel();
  failed_ = true;
  return {std::move(socket_), std::move(ssl_)};
}

}  // namespace tern::gateway
