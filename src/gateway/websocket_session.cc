#include "gateway/websocket_session.h"

#include <cassert>
#include <exception>
#include <string_view>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/websocket.hpp>
#include <spdlog/spdlog.h>

namespace tern::gateway {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;

namespace {

using Strand = net::strand<net::io_context::executor_type>;

// A queue that held this many frames and drained completely resumes the service even if it
// never crossed limit/2 (small limits in tests, batches in replay).
constexpr size_t kWritableAfterPeak = 64;
// A read buffer grown by one big message is given back once it exceeds this.
constexpr size_t kReadBufferKeep = 64 * 1024;
// Only used by Beast when it must copy (masking, compression); neither applies to a server
// without permessage-deflate, so frames go to the socket straight from the shared string.
constexpr size_t kWriteBufferBytes = 64 * 1024;
// Close reasons travel in a control frame: at most 123 bytes.
constexpr size_t kMaxReasonBytes = 123;

constexpr uint16_t kCloseUnsupported = 1003;
constexpr uint16_t kClosePolicy = 1008;
constexpr uint16_t kCloseInternal = 1011;

// Service callbacks are a boundary: an exception must not unwind through the io_context
// thread. Returns false if `fn` threw.
template <typename Fn>
bool guarded(const char* where, uint64_t conn, Fn&& fn) {
  try {
    fn();
    return true;
  } catch (const std::exception& e) {
    spdlog::error("event=handler_exception where={} conn={} what=\"{}\"", where, conn, e.what());
  } catch (...) {
    spdlog::error("event=handler_exception where={} conn={} what=unknown", where, conn);
  }
  return false;
}

}  // namespace

WebSocketSession::WebSocketSession(beast::tcp_stream&& stream, std::shared_ptr<GatewayContext> ctx,
                                   DeviceRef device)
    : ws_(std::move(stream)),
      executor_(ws_.get_executor()),
      ctx_(std::move(ctx)),
      device_(std::move(device)),
      id_(next_session_id()),
      close_deadline_(executor_) {}

WebSocketSession::~WebSocketSession() {
  // Reached without finish() only if the io_context was destroyed with our handlers still
  // queued; keep the gauge honest (on_close cannot be delivered safely then).
  if (opened_ && !finished_) ctx_->metrics.connections.add(-1);
  ctx_->registry.remove(id_);
}

std::shared_ptr<WebSocketSession> WebSocketSession::self() {
  return std::static_pointer_cast<WebSocketSession>(shared_from_this());
}

bool WebSocketSession::on_strand() const {
  const auto* strand = executor_.target<Strand>();
  return strand == nullptr || strand->running_in_this_thread();
}

void WebSocketSession::run(Request request) {
  assert(on_strand());
  if (auto code = ctx_->registry.add(id_, weak_from_this())) {
    // close_all() already ran: finish the handshake only to say goodbye properly.
    start_close(*code, "server shutting down", true);
  }

  const GatewayOptions& o = ctx_->options;
  // Beast's websocket timeouts replace the tcp_stream's own timer; both must not run.
  beast::get_lowest_layer(ws_).expires_never();
  websocket::stream_base::timeout timeouts{};
  timeouts.handshake_timeout = o.handshake_timeout;
  if (o.ping_interval.count() > 0) {
    // Beast pings after idle_timeout/2 of silence and gives up after idle_timeout.
    timeouts.idle_timeout = 2 * o.ping_interval;
    timeouts.keep_alive_pings = true;
  } else {
    timeouts.idle_timeout = websocket::stream_base::none();
    timeouts.keep_alive_pings = false;
  }
  ws_.set_option(timeouts);
  websocket::permessage_deflate pmd;
  pmd.server_enable = false;
  pmd.client_enable = false;
  ws_.set_option(pmd);
  ws_.read_message_max(o.max_frame_bytes);
  ws_.auto_fragment(false);
  ws_.write_buffer_bytes(kWriteBufferBytes);
  ws_.text(true);
  ws_.set_option(websocket::stream_base::decorator(
      [](websocket::response_type& res) { res.set(http::field::server, "ternd"); }));

  ws_.async_accept(request, beast::bind_front_handler(&WebSocketSession::on_accept, self()));
}

void WebSocketSession::on_accept(beast::error_code ec) {
  if (ec) {
    spdlog::debug("event=ws_handshake_failed conn={} error=\"{}\"", id_, ec.message());
    finish();
    return;
  }
  accepted_ = true;
  if (close_started_) {
    // Shut down while handshaking: no open(), so no on_close() is owed.
    maybe_send_close();
    do_read();
    return;
  }
  opened_ = true;
  ctx_->metrics.connections.add(1);
  spdlog::debug("event=ws_open conn={} user={} device={}", id_, device_.user, device_.device);

  std::shared_ptr<FrameHandler> handler;
  guarded("open", id_, [&] { handler = ctx_->service.open(self(), device_); });
  handler_ = std::move(handler);
  if (!handler_) start_close(kCloseInternal, "internal error", true);
  do_read();
}

void WebSocketSession::do_read() {
  ws_.async_read(rd_buf_, beast::bind_front_handler(&WebSocketSession::on_read, self()));
}

void WebSocketSession::on_read(beast::error_code ec, std::size_t /*bytes*/) {
  if (ec) {
    // closed (either side), timeout (no pong), message_too_big (Beast sent 1009), reset...
    spdlog::debug("event=ws_read_end conn={} error=\"{}\"", id_, ec.message());
    finish();
    return;
  }
  ctx_->metrics.ws_frames_in.inc();
  if (!ws_.got_text()) {
    start_close(kCloseUnsupported, "text frames only", false);
  } else if (handler_ && !close_started_) {
    const auto data = rd_buf_.cdata();
    const std::string_view frame(static_cast<const char*>(data.data()), data.size());
    if (!guarded("on_text", id_, [&] { handler_->on_text(frame); }))
      start_close(kCloseInternal, "internal error", true);
  }
  rd_buf_.consume(rd_buf_.size());
  if (rd_buf_.capacity() > kReadBufferKeep) rd_buf_.shrink_to_fit();
  // Reading continues while closing: it is how Beast receives the peer's close frame.
  do_read();
}

bool WebSocketSession::send(std::shared_ptr<const std::string> frame) {
  assert(on_strand());
  assert(frame);
  if (finished_ || close_started_ || !frame) return false;
  const size_t limit = ctx_->options.write_queue_frames;
  if (queue_.size() >= limit) {
    ctx_->metrics.slow_consumer_closes.inc();
    spdlog::info("event=slow_consumer conn={} queued={}", id_, queue_.size());
    start_close(kClosePolicy, "slow consumer", true);
    return false;
  }
  queue_.push_back(std::move(frame));
  const size_t n = queue_.size();
  if (n > limit / 2) above_half_ = true;
  if (n > peak_) peak_ = n;
  if (!writing_) do_write();
  return true;
}

void WebSocketSession::do_write() {
  assert(!writing_ && !queue_.empty());
  writing_ = true;
  // The buffer points into the shared frame, kept alive by queue_.front() until on_write.
  ws_.async_write(net::buffer(*queue_.front()),
                  beast::bind_front_handler(&WebSocketSession::on_write, self()));
}

void WebSocketSession::on_write(beast::error_code ec, std::size_t /*bytes*/) {
  assert(writing_ && !queue_.empty());
  writing_ = false;
  if (ec) {
    // The stream is unusable; cut the socket so the pending read ends and finish() runs.
    queue_.clear();
    hard_close();
    return;
  }
  ctx_->metrics.ws_frames_out.inc();
  queue_.pop_front();
  if (finished_) {
    queue_.clear();
    return;
  }

  bool notify = false;
  if (above_half_ && queue_.size() <= ctx_->options.write_queue_frames / 2) {
    above_half_ = false;
    notify = true;
  }
  if (queue_.empty()) {
    if (peak_ >= kWritableAfterPeak) notify = true;
    peak_ = 0;
  }
  if (notify && handler_ && !close_started_) {
    // The handler may send() from here; that restarts the write itself.
    if (!guarded("on_writable", id_, [&] { handler_->on_writable(); }))
      start_close(kCloseInternal, "internal error", true);
  }
  if (!writing_ && !queue_.empty())
    do_write();
  else
    maybe_send_close();
}

size_t WebSocketSession::queued() const {
  assert(on_strand());
  return queue_.size();
}

size_t WebSocketSession::queue_limit() const { return ctx_->options.write_queue_frames; }

uint64_t WebSocketSession::id() const { return id_; }

void WebSocketSession::close(uint16_t code, std::string reason) {
  assert(on_strand());
  start_close(code, reason, false);
}

void WebSocketSession::post(std::function<void()> fn) {
  net::post(executor_, [self = self(), fn = std::move(fn)] {
    if (self->finished_) return;
    guarded("post", self->id_, fn);
  });
}

void WebSocketSession::shutdown(uint16_t ws_code) {
  net::post(executor_, [self = self(), ws_code] {
    self->start_close(ws_code, ws_code == 1001 ? "server shutting down" : "closing", true);
  });
}

void WebSocketSession::start_close(uint16_t code, std::string_view reason, bool drop) {
  assert(on_strand());
  if (close_started_ || finished_) return;
  close_started_ = true;
  if (reason.size() > kMaxReasonBytes) reason = reason.substr(0, kMaxReasonBytes);
  close_reason_ = websocket::close_reason(static_cast<websocket::close_code>(code), reason);
  if (drop) drop_unsent();

  // Beast bounds the close handshake once the close frame is out, but the frame waits
  // behind an in-flight write that a peer who never reads can stall forever: cut it then.
  close_deadline_.expires_after(ctx_->options.handshake_timeout + std::chrono::seconds(1));
  close_deadline_.async_wait(beast::bind_front_handler(&WebSocketSession::on_close_deadline, self()));

  if (accepted_) maybe_send_close();  // otherwise on_accept() sends it
}

void WebSocketSession::maybe_send_close() {
  if (!close_started_ || close_sent_ || !accepted_ || finished_ || writing_ || !queue_.empty()) return;
  close_sent_ = true;
  ws_.async_close(close_reason_, beast::bind_front_handler(&WebSocketSession::on_close_sent, self()));
}

void WebSocketSession::on_close_sent(beast::error_code ec) {
  // Normally operation_aborted: our read loop receives the peer's close and completes the
  // handshake; nothing to do either way (the read loop ends and calls finish()).
  if (ec && ec != net::error::operation_aborted)
    spdlog::debug("event=ws_close_failed conn={} error=\"{}\"", id_, ec.message());
}

void WebSocketSession::on_close_deadline(beast::error_code ec) {
  if (ec || finished_) return;  // cancelled by finish()
  spdlog::debug("event=ws_close_timeout conn={}", id_);
  hard_close();
}

void WebSocketSession::drop_unsent() {
  if (writing_) {
    // Keep the frame being written: Beast still reads from it.
    queue_.erase(queue_.begin() + 1, queue_.end());
  } else {
    queue_.clear();
  }
  peak_ = 0;
  above_half_ = false;
}

void WebSocketSession::hard_close() {
  // What Beast itself does on a timeout: pending operations complete with errors.
  beast::get_lowest_layer(ws_).close();
}

void WebSocketSession::finish() {
  assert(on_strand());
  if (finished_) return;
  finished_ = true;
  close_deadline_.cancel();
  drop_unsent();
  if (opened_) {
    ctx_->metrics.connections.add(-1);
    spdlog::debug("event=ws_close conn={} code={}", id_, static_cast<unsigned>(ws_.reason().code));
  }
  if (handler_) {
    auto handler = std::move(handler_);
    guarded("on_close", id_, [&] { handler->on_close(); });
  }
}

}  // namespace tern::gateway
