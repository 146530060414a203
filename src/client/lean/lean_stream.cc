#include "client/lean/lean_stream.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

namespace tern::client::lean {

LeanStream::LeanStream(asio::io_context& io, ReadScratch& scratch, Owner& owner)
    : io_(io), scratch_(scratch), owner_(owner), socket_(io) {}

LeanStream::~LeanStream() {
  // No callbacks: the owner is being destroyed too.
  boost::system::error_code ec;
  socket_.close(ec);
}

void LeanStream::reset(bool abort) {
  ++gen_;
  boost::system::error_code ec;
  if (socket_.is_open()) {
    if (abort) socket_.set_option(asio::socket_base::linger(true, 0), ec);
    socket_.close(ec);
  }
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
                      std::string hello) {
  reset(true);
  const uint64_t gen = gen_;
  phase_ = Phase::kConnecting;
  boost::system::error_code ec;
  socket_.open(server.protocol(), ec);
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
    ::setsockopt(socket_.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
    socket_.bind(asio::ip::tcp::endpoint(*source, 0), ec);
    if (ec) {
      asio::post(io_, [this, gen] { if (gen == gen_) fail("bind"); });
      return;
    }
  }
  out_ = std::move(hello);
  socket_.async_connect(server, [this, gen](const boost::system::error_code& cec) {
    if (gen != gen_) return;
    if (cec) return fail("connect");
    boost::system::error_code oec;
    socket_.set_option(asio::ip::tcp::no_delay(true), oec);
    // Reads are done by hand in on_readable() (read_some until would_block).
    socket_.non_blocking(true, oec);
    phase_ = Phase::kHandshake;
    start_write();
    start_read();
  });
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
  asio::async_write(socket_, asio::buffer(inflight_), [this, gen](const boost::system::error_code& ec, size_t) {
    if (gen != gen_) return;
    writing_ = false;
    inflight_.clear();
    if (ec) return fail("write");
    if (!out_.empty()) return start_write();
    if (close_after_write_) reset(false);
  });
}

void LeanStream::start_read() {
  const uint64_t gen = gen_;
  socket_.async_wait(asio::ip::tcp::socket::wait_read, [this, gen](const boost::system::error_code& ec) {
    if (gen != gen_) return;
    if (ec) return fail("read");
    on_readable();
  });
}

void LeanStream::on_readable() {
  // Bounded: a connection that always has data must not starve the others on this thread.
  for (int round = 0; round < 4; ++round) {
    boost::system::error_code ec;
    const size_t n = socket_.read_some(asio::buffer(scratch_.bytes), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) break;
    if (ec == asio::error::eof) return fail("eof");
    if (ec) return fail("read");
    if (close_after_write_) continue;  // closing: drain and drop
    if (!consume(scratch_.bytes.data(), n)) return;
    if (n < scratch_.bytes.size()) break;
  }
  start_read();
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
