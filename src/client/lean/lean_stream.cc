#include "client/lean/lean_stream.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>

#include "client/tls.h"

namespace tern::client::lean {

LeanStream::LeanStream(asio::io_context& io, ReadScratch& scratch, Owner& owner)
    : io_(io), scratch_(scratch), owner_(owner), socket_(io) {}

LeanStream::~LeanStream() {
  // No callbacks: the owner is being destroyed too.
  boost::system::error_code ec;
  tcp().close(ec);
}

void LeanStream::reset(bool abort) {
  ++gen_;
  boost::system::error_code ec;
  asio::ip::tcp::socket& s = tcp();
  if (s.is_open()) {
    if (abort) s.set_option(asio::socket_base::linger(true, 0), ec);
    s.close(ec);
  }
  // No close_notify: the connection is going away either way, and waiting for the peer's would
  // hold it open. A pending TLS operation keeps its own reference (see tls_).
  tls_.reset();
  phase_ = Phase::kClosed;
  writing_ = false;
  flush_posted_ = false;
  close_after_write_ = false;
  // Swap rather than clear so that a connection that once carried a large unit gives the
  // memory back; an idle connection should cost its socket and little else.
  std::string().swap(pending_);
  std::string().swap(out_);
  std::string().swap(inflight_);
  owner_.on_stream_reset();
}

void LeanStream::fail(std::string_view reason) {
  if (phase_ == Phase::kClosed) return;
  const std::string why(reason);  // `reason` may point into a buffer reset() frees
  reset(false);
  owner_.on_stream_failed(why);
}

void LeanStream::open(const asio::ip::tcp::endpoint& server, const std::optional<asio::ip::address>& source,
                      std::string hello, const LeanTls* tls) {
  reset(true);
  const uint64_t gen = gen_;
  phase_ = Phase::kConnecting;
  tls_cfg_ = tls;
  if (tls) tls_ = std::make_shared<TlsSocket>(io_, *tls->context);
  asio::ip::tcp::socket& s = tcp();
  boost::system::error_code ec;
  s.open(server.protocol(), ec);
  if (ec) {
    // Defer: the owner's handler must not be re-entered from inside open().
    asio::post(io_, [this, gen] { if (gen == gen_) fail("socket"); });
    return;
  }
  if (source) {
#ifdef IP_BIND_ADDRESS_NO_PORT
    // The port is left to connect(), so that connections spread over several 127.0.0.x source
    // addresses when one address's ephemeral ports run out.
    int one = 1;
    ::setsockopt(s.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
    s.bind(asio::ip::tcp::endpoint(*source, 0), ec);
    if (ec) {
      asio::post(io_, [this, gen] { if (gen == gen_) fail("bind"); });
      return;
    }
  }
  out_ = std::move(hello);
  s.async_connect(server, [this, gen, keep = tls_](const boost::system::error_code& cec) {
    if (gen != gen_) return;
    if (cec) return fail("connect");
    boost::system::error_code oec;
    tcp().set_option(asio::ip::tcp::no_delay(true), oec);
    // Reads are done by hand in on_readable() (read_some until would_block).
    tcp().non_blocking(true, oec);
    if (tls_) return start_tls();
    connected();
  });
}

void LeanStream::start_tls() {
  if (auto ok = client::prepare_tls(tls_->native_handle(), tls_cfg_->host); !ok) return fail("tls handshake");
  const uint64_t gen = gen_;
  tls_->async_handshake(asio::ssl::stream_base::client, [this, gen, keep = tls_](const boost::system::error_code& ec) {
    if (gen != gen_) return;
    if (ec) return fail(tls_failure_reason(ec));
    connected();
  });
}

void LeanStream::connected() {
  phase_ = Phase::kHandshake;
  start_write();
  start_read();
}

void LeanStream::schedule_flush() {
  if (writing_ || flush_posted_) return;
  flush_posted_ = true;
  const uint64_t gen = gen_;
  // Posted, not immediate: everything queued by the current handler run shares one write.
  asio::post(io_, [this, gen] {
    if (gen != gen_) return;
    flush_posted_ = false;
    start_write();
  });
}

void LeanStream::start_write() {
  if (writing_ || out_.empty() || phase_ == Phase::kConnecting || phase_ == Phase::kClosed) return;
  writing_ = true;
  inflight_.swap(out_);
  const uint64_t gen = gen_;
  auto done = [this, gen, keep = tls_](const boost::system::error_code& ec, size_t) {
    if (gen != gen_) return;
    writing_ = false;
    inflight_.clear();
    if (ec) return fail("write");
    if (!out_.empty()) return start_write();
    if (close_after_write_) reset(false);
  };
  // One write either way; over TLS, Asio cuts it into records of at most 16 KiB.
  if (tls_) {
    asio::async_write(*tls_, asio::buffer(inflight_), std::move(done));
  } else {
    asio::async_write(socket_, asio::buffer(inflight_), std::move(done));
  }
}

void LeanStream::start_read() {
  const uint64_t gen = gen_;
  tcp().async_wait(asio::ip::tcp::socket::wait_read, [this, gen, keep = tls_](const boost::system::error_code& ec) {
    if (gen != gen_) return;
    if (ec) return fail("read");
    on_readable();
  });
}

void LeanStream::on_readable() {
  // Bounded: a connection that always has data must not starve the others on this thread.
  for (int round = 0; round < 4; ++round) {
    boost::system::error_code ec;
    // Over TLS, a read on the non-blocking socket decrypts what is buffered (in OpenSSL and
    // in the stream) first and reads the socket only when that is used up, so would_block
    // means everything readable has been handed over. (A read that had to write, such as a
    // TLS 1.3 KeyUpdate answer, would share the stream's output buffer with a write in
    // flight; ternd never requests one.)
    const size_t n = tls_ ? tls_->read_some(asio::buffer(scratch_.bytes), ec)
                          : socket_.read_some(asio::buffer(scratch_.bytes), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) return start_read();
    if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) return fail("eof");
    if (ec) return fail("read");
    if (close_after_write_) continue;  // closing: drain and drop
    if (!consume(scratch_.bytes.data(), n)) return;
    // A plain read that did not fill the scratch emptied the socket. A TLS read returns one
    // record at most, so only would_block says that there is nothing more.
    if (!tls_ && n < scratch_.bytes.size()) return start_read();
  }
  if (!tls_) return start_read();
  // TLS: decrypted bytes may wait inside OpenSSL with nothing left on the socket, so waiting
  // for readability could wait for ever; come back after the other connections' turn.
  const uint64_t gen = gen_;
  asio::post(io_, [this, gen, keep = tls_] {
    if (gen == gen_) on_readable();
  });
}

bool LeanStream::consume(const char* data, size_t n) {
  const uint64_t gen = gen_;
  // A partial unit from an earlier read is moved out of pending_ first: the owner may close or
  // reopen this stream, which resets pending_, while views into the bytes are live.
  std::string joined;
  std::string_view in(data, n);
  const bool from_pending = !pending_.empty();
  if (from_pending) {
    joined.swap(pending_);
    joined.append(data, n);
    in = joined;
  }
  const size_t used = owner_.on_stream_input(in);
  if (gen != gen_) return false;
  if (used < in.size()) {
    if (from_pending && used == 0) {
      pending_.swap(joined);  // nothing consumed: keep the buffer as it is
    } else {
      pending_.assign(in.substr(used));
    }
  }
  return true;
}

}  // namespace tern::client::lean
