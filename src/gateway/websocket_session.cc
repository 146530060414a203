#include "gateway/websocket_session.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include "gateway/tls_stream.h"

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <exception>
#include <limits>
#include <string_view>
#include <utility>

#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <spdlog/spdlog.h>

#include "base/heap_trim.h"

namespace tern::gateway {

namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

using Strand = net::strand<net::io_context::executor_type>;

constexpr uint8_t kRaw = 0xFF;
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
constexpr size_t kNotListed = std::numeric_limits<size_t>::max();
// One gathered write: at most this many frames (two iovecs each) and about this many bytes.
constexpr size_t kMaxFramesPerWrite = 64;
constexpr size_t kMaxBytesPerWrite = 256 * 1024;
// Reads: the per-thread scratch buffer, and how many reads one turn may do.
constexpr size_t kScratchBytes = 64 * 1024;
// Bytes of messages one connection hands to the service per loop turn (with frames_per_turn).
constexpr size_t kTurnBytes = 16 * 1024;
constexpr int kMaxReadsPerTurn = 16;
// Over the global budget, queues above this are shed; smaller ones are still served.
constexpr size_t kGlobalShedFloor = 64 * 1024;
// A paused input waits until this much (or the whole burst, if smaller) has refilled.
constexpr double kResumeInputBytes = 16 * 1024;
constexpr std::chrono::seconds kSweepPeriod{1};

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

char* scratch_buffer() {
  thread_local std::unique_ptr<char[]> buffer(new char[kScratchBytes]);
  return buffer.get();
}

const std::shared_ptr<const std::string>& empty_payload() {
  static const auto empty = std::make_shared<const std::string>();
  return empty;
}

// Plain operator new/delete for operations that stay pending while a connection is idle.
// (std::allocator<void> would not do: Asio treats it as "no allocator" and recycles blocks.)
template <typename T>
struct ExactAllocator {
  using value_type = T;
  ExactAllocator() = default;
  template <typename U>
  ExactAllocator(const ExactAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T))); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p); }
  template <typename U>
  bool operator==(const ExactAllocator<U>&) const noexcept { return true; }
  template <typename U>
  bool operator!=(const ExactAllocator<U>&) const noexcept { return false; }
};

// Service callbacks are a boundary: an exception must not unwind through the loop's thread.
// Returns false if `fn` threw.
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

WebSocketSession::WebSocketSession(tcp::socket&& socket, SslPtr ssl, std::shared_ptr<GatewayContext> ctx,
                                   size_t loop_index, ConnectionSlot slot, DeviceRef device)
    : socket_(std::move(socket)),
      tls_(ssl ? std::make_unique<Tls>(Tls{std::move(ssl), {}}) : nullptr),
      ctx_(std::move(ctx)),
      loop_(ctx_->loop(loop_index)),
      device_(std::move(device)),
      id_(next_session_id()),
      slot_(std::move(slot)),
      due_ms_(kNever),
      list_index_(kNotListed),
      deadline_ms_(kNever),
      input_tokens_(static_cast<double>(ctx_->options.max_frame_bytes)),
      control_tokens_(ctx_->options.control_frames_burst) {}

WebSocketSession::~WebSocketSession() {
  // Reached without finish() only if the io_context was destroyed with our handlers still
  // queued; keep the gauge and the budget honest (on_close cannot be delivered safely then).
  if (!finished_) {
    remove_from_loop();
    if (opened_) ctx_->metrics.connections.add(-1);
    ctx_->refund(queued_bytes_);
  }
  ctx_->registry.remove(id_);
}

std::shared_ptr<WebSocketSession> WebSocketSession::self() {
  return std::static_pointer_cast<WebSocketSession>(shared_from_this());
}

bool WebSocketSession::on_loop() const {
  auto ex = const_cast<tcp::socket&>(socket_).get_executor();
  if (const auto* strand = ex.target<Strand>()) return strand->running_in_this_thread();
  if (const auto* io = ex.target<net::io_context::executor_type>()) return io->running_in_this_thread();
  return true;
}

// --- Opening ---------------------------------------------------------------------------------

void WebSocketSession::run(const std::string& accept_key, std::string early) {
  assert(on_loop());
  const auto closing = ctx_->registry.add(id_, weak_from_this());
  boost::system::error_code ec;
  socket_.non_blocking(true, ec);
  if (ec) {
    spdlog::debug("event=ws_handshake_failed conn={} error=\"{}\"", id_, ec.message());
    finish();
    return;
  }
  const int64_t now = now_ms();
  last_rx_ms_ = now;
  tokens_ms_ = now;
  deadline_ms_ = now + std::chrono::duration_cast<std::chrono::milliseconds>(ctx_->options.handshake_timeout).count();
  update_due();
  add_to_loop();
  if (!early.empty()) pending_.assign(early.begin(), early.end());

  auto response = std::make_shared<std::string>();
  response->reserve(160);
  response->append("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: ")
      .append(accept_key)
      .append("\r\nServer: ternd\r\n\r\n");
  enqueue(std::move(response), kRaw);
  // close_all() already ran: finish the handshake only to say goodbye properly.
  if (closing) start_close(*closing, "server shutting down", true);
  flush();  // nothing else can be queued yet: write the 101 now
}

void WebSocketSession::on_handshake_written() {
  handshake_done_ = true;
  if (!close_started_) {
    deadline_ms_ = kNever;
    update_due();
    opened_ = true;
    ctx_->metrics.connections.add(1);
    spdlog::debug("event=ws_open conn={} user={} device={} loop={}", id_, device_.user, device_.device, loop_->index);
    std::shared_ptr<FrameHandler> handler;
    guarded("open", id_, [&] { handler = ctx_->service.open(self(), device_); });
    handler_ = std::move(handler);
    if (!handler_) start_close(ws::kCloseInternal, "internal error", true);
  }
  if (!finished_) read_turn();  // the bytes that came with the request, then the socket
}

// --- Connection ----------------------------------------------------------------------------------

bool WebSocketSession::send(std::shared_ptr<const std::string> frame) {
  assert(on_loop());
  assert(frame);
  if (finished_ || close_started_ || !frame) return false;
  const size_t size = frame->size();
  if (queued_bytes_ > 0 && queued_bytes_ + size > ctx_->options.write_queue_bytes) {
    slow_consumer();
    return false;
  }
  if (queued_bytes_ > kGlobalShedFloor && ctx_->global_budget_exceeded(size)) {
    slow_consumer();
    return false;
  }
  enqueue(std::move(frame), ws::kText);
  schedule_flush();
  return true;
}

size_t WebSocketSession::queued_bytes() const {
  assert(on_loop());
  return queued_bytes_;
}

size_t WebSocketSession::queue_limit_bytes() const { return ctx_->options.write_queue_bytes; }

uint64_t WebSocketSession::id() const { return id_; }

size_t WebSocketSession::loop_index() const { return loop_->index; }

void WebSocketSession::close(uint16_t code, std::string reason) {
  assert(on_loop());
  start_close(code, reason, false);
}

void WebSocketSession::post(std::function<void()> fn) {
  net::post(socket_.get_executor(), [self = self(), fn = std::move(fn)] {
    if (self->finished_) return;
    guarded("post", self->id_, fn);
  });
}

void WebSocketSession::shutdown(uint16_t ws_code) {
  net::post(socket_.get_executor(), [self = self(), ws_code] {
    self->start_close(ws_code, ws_code == 1001 ? "server shutting down" : "closing", true);
  });
}

// --- Writing -------------------------------------------------------------------------------------

void WebSocketSession::enqueue(std::shared_ptr<const std::string> data, uint8_t opcode) {
  const size_t size = data->size();
  if (queue_.capacity() == 0) queue_.reserve(8);
  queue_.push_back(Out{std::move(data), opcode});
  queued_bytes_ += size;
  ctx_->charge(size);
}

void WebSocketSession::release_bytes(size_t n) {
  queued_bytes_ -= n;
  ctx_->refund(n);
}

void WebSocketSession::schedule_flush() {
  if (flush_posted_ || write_waiting_ || finished_) return;
  flush_posted_ = true;
  net::post(socket_.get_executor(), [self = self()] { self->flush(); });
}

void WebSocketSession::flush() {
  flush_posted_ = false;
  if (finished_ || write_waiting_) return;
  const bool notify = handler_ != nullptr;  // not for the 101: the service opens after it
  bool wrote = false;
  bool handshake_written = false;
  bool close_written = false;
  size_t frames = 0;
  while (head_ < queue_.size()) {
    if (tls_) {
      const TlsWrite r = write_tls(&frames, &handshake_written, &close_written);
      if (r == TlsWrite::kFailed) {
        if (frames) ctx_->metrics.ws_frames_out.inc(frames);
        finish();
        return;
      }
      if (r == TlsWrite::kBlocked) {
        wait_writable();
        break;
      }
      wrote = true;
      continue;
    }
    iovec iov[2 * kMaxFramesPerWrite];
    uint8_t headers[kMaxFramesPerWrite][10];
    size_t niov = 0;
    size_t bytes = 0;
    for (size_t i = head_, k = 0; i < queue_.size() && k < kMaxFramesPerWrite && bytes < kMaxBytesPerWrite;
         ++i, ++k) {
      const Out& out = queue_[i];
      const std::string& data = *out.data;
      const size_t header = out.opcode == kRaw ? 0 : ws::encode_header(out.opcode, data.size(), headers[k]);
      size_t skip = i == head_ ? front_written_ : 0;
      if (skip < header) {
        iov[niov++] = iovec{headers[k] + skip, header - skip};
        bytes += header - skip;
        skip = 0;
      } else {
        skip -= header;
      }
      if (data.size() > skip) {
        iov[niov++] = iovec{const_cast<char*>(data.data()) + skip, data.size() - skip};
        bytes += data.size() - skip;
      }
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = niov;
    const ssize_t n = ::sendmsg(socket_.native_handle(), &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        wait_writable();
        break;
      }
      spdlog::debug("event=ws_write_failed conn={} errno={}", id_, errno);
      if (frames) ctx_->metrics.ws_frames_out.inc(frames);
      finish();
      return;
    }
    wrote = true;
    ctx_->metrics.ws_writes.inc();
    account_written(static_cast<size_t>(n), &frames, &handshake_written, &close_written);
    if (static_cast<size_t>(n) < bytes) {  // the socket buffer is full
      wait_writable();
      break;
    }
  }
  if (frames) ctx_->metrics.ws_frames_out.inc(frames);
  if (head_ == queue_.size()) {
    std::vector<Out>().swap(queue_);  // idle connections hold no queue
    head_ = 0;
    front_written_ = 0;
  } else if (head_ >= 64 && head_ * 2 >= queue_.size()) {
    queue_.erase(queue_.begin(), queue_.begin() + head_);
    head_ = 0;
  }
  if (handshake_written) {
    on_handshake_written();
    if (finished_) return;
  }
  if (close_written) {
    on_close_written();
    if (finished_) return;
  }
  if (wrote && notify && handler_ && !close_started_ && queued_bytes_ <= ctx_->options.write_queue_bytes / 2) {
    // The handler may send() from here; that posts the next flush.
    if (!guarded("on_writable", id_, [&] { handler_->on_writable(); }))
      start_close(ws::kCloseInternal, "internal error", true);
  }
}

WebSocketSession::TlsWrite WebSocketSession::write_tls(size_t* frames, bool* handshake_written, bool* close_written) {
  std::vector<char>& stage = tls_->stage;
  if (stage.empty()) {
    // Stage up to one record from the queue, where the last write stopped.
    constexpr size_t kRecordBytes = 16 * 1024;
    stage.reserve(kRecordBytes);
    size_t skip = front_written_;
    for (size_t i = head_; i < queue_.size() && stage.size() < kRecordBytes; ++i) {
      const Out& out = queue_[i];
      uint8_t header[10];
      const size_t header_size = out.opcode == kRaw ? 0 : ws::encode_header(out.opcode, out.data->size(), header);
      for (const auto& [p, size] : {std::pair<const char*, size_t>{reinterpret_cast<const char*>(header), header_size},
                                    std::pair<const char*, size_t>{out.data->data(), out.data->size()}}) {
        if (skip >= size) {
          skip -= size;
          continue;
        }
        const size_t take = std::min(size - skip, kRecordBytes - stage.size());
        stage.insert(stage.end(), p + skip, p + skip + take);
        skip = 0;
      }
    }
  }
  size_t n = 0;
  const TlsIo r = tls_write(tls_->ssl.get(), stage.data(), stage.size(), &n);
  if (r == TlsIo::kWantWrite) return TlsWrite::kBlocked;  // the same bytes are offered again
  if (r != TlsIo::kOk) {
    spdlog::debug("event=ws_write_failed conn={} tls=1", id_);
    tls_->fatal = r == TlsIo::kError;
    return TlsWrite::kFailed;
  }
  ctx_->metrics.ws_writes.inc();
  account_written(n, frames, handshake_written, close_written);
  if (n == stage.size())
    std::vector<char>().swap(stage);  // idle connections hold no stage
  else
    stage.erase(stage.begin(), stage.begin() + static_cast<std::ptrdiff_t>(n));
  return TlsWrite::kProgress;
}

ssize_t WebSocketSession::receive(char* data, size_t size) {
  if (!tls_) return ::recv(socket_.native_handle(), data, size, 0);
  size_t n = 0;
  switch (tls_read(tls_->ssl.get(), data, size, &n)) {
    case TlsIo::kOk:
      return static_cast<ssize_t>(n);
    case TlsIo::kWantWrite:
      tls_->read_wants_write = true;
      [[fallthrough]];
    case TlsIo::kWantRead:
      errno = EAGAIN;
      return -1;
    case TlsIo::kClosed:
      return 0;
    case TlsIo::kError:
      break;
  }
  tls_->fatal = true;
  errno = ECONNRESET;
  return -1;
}

void WebSocketSession::account_written(size_t n, size_t* frames, bool* handshake_written, bool* close_written) {
  while (n > 0) {
    Out& out = queue_[head_];
    const size_t size = out.data->size();
    const size_t total = (out.opcode == kRaw ? 0 : ws::header_size(size)) + size;
    const size_t left = total - front_written_;
    if (n < left) {
      front_written_ += static_cast<uint32_t>(n);
      return;
    }
    n -= left;
    front_written_ = 0;
    release_bytes(size);
    if (out.opcode == ws::kText) ++*frames;
    if (out.opcode == kRaw) *handshake_written = true;
    if (out.opcode == ws::kClose) *close_written = true;
    out.data.reset();
    ++head_;
  }
}

void WebSocketSession::wait_writable() {
  write_waiting_ = true;
  socket_.async_wait(tcp::socket::wait_write, [self = self()](const boost::system::error_code& ec) {
    self->write_waiting_ = false;
    if (self->finished_) return;
    if (ec) return self->finish();
    self->flush();
  });
}

void WebSocketSession::drop_unsent() {
  // Kept: the frame partly written (the peer has its beginning) and the 101.
  // On TLS, also every frame with bytes in the stage (OpenSSL may hold them already).
  const size_t committed = front_written_ + (tls_ ? tls_->stage.size() : 0);
  std::vector<Out> keep;
  size_t offset = 0;  // where queue_[i] starts, in bytes from the start of queue_[head_]
  for (size_t i = head_; i < queue_.size(); ++i) {
    const size_t size = queue_[i].data->size();
    if (offset < committed || queue_[i].opcode == kRaw)
      keep.push_back(std::move(queue_[i]));
    else
      release_bytes(size);
    if (committed > 0) offset += (queue_[i].opcode == kRaw ? 0 : ws::header_size(size)) + size;
  }
  queue_.swap(keep);
  head_ = 0;
}

void WebSocketSession::on_close_written() {
  close_sent_ = true;
  if (close_received_) return finish();  // handshake complete: the server closes TCP
  if (draining_) {
    // After an error: half-close and discard what the peer still sends until it closes
    // (closing with unread input would reset the connection, and could destroy our close
    // frame before the peer reads it).
    if (tls_ && !tls_->fatal) tls_close_notify(tls_->ssl.get());
    boost::system::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
  }
  // Otherwise wait for the peer's close frame; the deadline bounds the wait.
}

// --- Reading -------------------------------------------------------------------------------------

void WebSocketSession::arm_read() {
  if (read_waiting_ || finished_) return;
  read_waiting_ = true;
  // This wait is pending for as long as the connection is idle. Asio's default handler
  // allocator would hand it a per-thread cached block (often the ~600 B of the HTTP
  // session's last read operation); ExactAllocator gives it exactly its size (~150 B).
  auto wait = tcp::socket::wait_read;
  if (tls_ && tls_->read_wants_write) {
    tls_->read_wants_write = false;
    wait = tcp::socket::wait_write;  // OpenSSL must write before it can read on
  }
  socket_.async_wait(wait,
                     net::bind_allocator(ExactAllocator<void>(), [self = self()](const boost::system::error_code& ec) {
                       self->read_waiting_ = false;
                       if (self->finished_) return;
                       if (ec) return self->finish();
                       self->read_turn();
                     }));
}

void WebSocketSession::post_read_turn() {
  if (read_posted_ || finished_) return;
  read_posted_ = true;
  net::post(socket_.get_executor(), [self = self()] {
    self->read_posted_ = false;
    if (!self->finished_) self->read_turn();
  });
}

void WebSocketSession::free_input() {
  std::vector<char>().swap(pending_);
  parser_.release();
}

void WebSocketSession::read_turn() {
  if (finished_ || input_paused_) return;
  size_t delivered = 0;
  turn_bytes_ = 0;
  struct Count {
    size_t& n;
    Counter& counter;
    ~Count() {
      if (n) counter.inc(n);
    }
  } count{delivered, ctx_->metrics.ws_frames_in};

  // First what is buffered (left over by the budget, or an incomplete frame).
  if (!pending_.empty() && !draining_) {
    const Parsed r = parse_pending(&delivered);
    if (finished_) return;
    if (r == Parsed::kBudget) return post_read_turn();
  }

  // Then drain the socket, within this turn's budgets.
  const GatewayOptions& o = ctx_->options;
  char* scratch = scratch_buffer();
  for (int reads = 0;; ++reads) {
    if (reads == kMaxReadsPerTurn) return post_read_turn();  // more may be waiting: yield
    size_t want = kScratchBytes;
    const int64_t now = now_ms();
    if (o.max_input_bytes_per_sec > 0) {
      refill(now);
      if (input_tokens_ < 1) return pause_input();
      want = std::min(want, static_cast<size_t>(input_tokens_));
    }
    const ssize_t n = receive(scratch, want);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      spdlog::debug("event=ws_read_failed conn={} errno={}", id_, errno);
      return finish();
    }
    if (n == 0) {
      spdlog::debug("event=ws_eof conn={}", id_);
      return finish();
    }
    if (o.max_input_bytes_per_sec > 0) input_tokens_ -= static_cast<double>(n);
    last_rx_ms_ = now;
    ping_outstanding_ = false;
    if (draining_) continue;

    Parsed r;
    if (!pending_.empty()) {
      pending_.insert(pending_.end(), scratch, scratch + n);
      r = parse_pending(&delivered);
      if (finished_) return;
    } else {
      size_t consumed = 0;
      r = parse(scratch, static_cast<size_t>(n), &consumed, &delivered);
      if (finished_) return;
      // Only what could not be handled this turn is copied into the connection.
      if (!draining_ && consumed < static_cast<size_t>(n)) pending_.assign(scratch + consumed, scratch + n);
    }
    if (r == Parsed::kBudget) return post_read_turn();
    // A short read emptied the socket's receive queue: no second recv just to hear EAGAIN
    // (that was one syscall per readable event). Data arriving from now on raises a new
    // edge, which the loop's epoll_wait sees only after this handler has re-armed the wait
    // below: the loop is one thread.
    if (!tls_ && static_cast<size_t>(n) < want) break;
  }
  arm_read();
}

WebSocketSession::Parsed WebSocketSession::parse_pending(size_t* delivered) {
  size_t consumed = 0;
  const Parsed r = parse(pending_.data(), pending_.size(), &consumed, delivered);
  if (finished_) return r;
  if (draining_) {
    free_input();
  } else {
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(consumed));
    if (pending_.empty()) std::vector<char>().swap(pending_);  // idle connections keep no buffer
  }
  return r;
}

WebSocketSession::Parsed WebSocketSession::parse(char* data, size_t size, size_t* consumed, size_t* delivered) {
  size_t offset = 0;
  Parsed result = Parsed::kContinue;
  while (true) {
    size_t used = 0;
    const ws::Event event = parser_.next(data + offset, size - offset, ctx_->options.max_frame_bytes, &used);
    offset += used;
    if (event.kind == ws::Event::kNeedMore) break;
    result = handle(event, delivered);
    if (result != Parsed::kContinue) break;
  }
  *consumed = offset;
  return result;
}

WebSocketSession::Parsed WebSocketSession::handle(const ws::Event& event, size_t* delivered) {
  switch (event.kind) {
    case ws::Event::kNeedMore:
    case ws::Event::kFragment:
      return Parsed::kContinue;
    case ws::Event::kText:
      if (close_started_ || !handler_) return Parsed::kContinue;  // closing: discarded
      ++*delivered;
      if (!guarded("on_text", id_, [&] { handler_->on_text(event.payload); })) {
        start_close(ws::kCloseInternal, "internal error", true);
        return Parsed::kStop;
      }
      if (finished_) return Parsed::kStop;
      // The turn's budget is in frames and in bytes: parsing and handling cost grows with the
      // size, so a connection of big frames yields as soon as one of small ones would.
      turn_bytes_ += event.payload.size();
      return *delivered >= ctx_->options.frames_per_turn || turn_bytes_ >= kTurnBytes ? Parsed::kBudget
                                                                                        : Parsed::kContinue;
    case ws::Event::kPing:
    case ws::Event::kPong:
      if (!take_control_token()) {
        ctx_->metrics.control_frame_closes.inc();
        spdlog::info("event=control_frame_flood conn={}", id_);
        start_close(ws::kClosePolicy, "too many control frames", true);
        draining_ = true;
        return Parsed::kStop;
      }
      if (event.kind == ws::Event::kPing && !close_started_) {
        enqueue(std::make_shared<const std::string>(event.payload), ws::kPong);
        schedule_flush();
      }
      return Parsed::kContinue;
    case ws::Event::kClose:
      close_received_ = true;
      draining_ = true;  // nothing may follow a close frame
      if (!close_started_) {
        // Echo the peer's code (an empty close frame if it sent none), then shut down.
        start_close(event.code, "", true);
      } else if (close_sent_) {
        finish();  // we closed first and the peer answered: done
      }
      return Parsed::kStop;
    case ws::Event::kError:
      spdlog::debug("event=ws_protocol_error conn={} code={} reason=\"{}\"", id_, event.code, event.reason);
      draining_ = true;
      // 1009 goes without a reason, as documented in docs/protocol.md §11.
      start_close(event.code, event.code == ws::kCloseTooBig ? "" : event.reason, true);
      return Parsed::kStop;
  }
  return Parsed::kStop;
}

void WebSocketSession::refill(int64_t now) {
  const int64_t elapsed = now - tokens_ms_;
  if (elapsed <= 0) return;
  tokens_ms_ = now;
  const GatewayOptions& o = ctx_->options;
  const double seconds = static_cast<double>(elapsed) / 1000.0;
  control_tokens_ = std::min(o.control_frames_burst, control_tokens_ + seconds * o.control_frames_per_sec);
  if (o.max_input_bytes_per_sec > 0)
    input_tokens_ = std::min(static_cast<double>(o.max_frame_bytes),
                             input_tokens_ + seconds * static_cast<double>(o.max_input_bytes_per_sec));
}

bool WebSocketSession::take_control_token() {
  refill(last_rx_ms_);
  if (control_tokens_ < 1) return false;
  control_tokens_ -= 1;
  return true;
}

void WebSocketSession::pause_input() {
  // Stop reading: the kernel's buffers fill and TCP pushes back on the client.
  ctx_->metrics.ws_input_paused.inc();
  input_paused_ = true;
  const GatewayOptions& o = ctx_->options;
  const double target = std::min(kResumeInputBytes, static_cast<double>(o.max_frame_bytes));
  const double wait_s = std::max(0.0, target - input_tokens_) / static_cast<double>(o.max_input_bytes_per_sec);
  const auto wait = std::chrono::milliseconds(std::max<int64_t>(1, static_cast<int64_t>(std::ceil(wait_s * 1000))));
  if (!pause_timer_) pause_timer_ = std::make_unique<net::steady_timer>(socket_.get_executor());
  pause_timer_->expires_after(wait);
  pause_timer_->async_wait([self = self()](const boost::system::error_code& ec) {
    if (ec || self->finished_) return;
    self->input_paused_ = false;
    self->pause_timer_.reset();  // the wait is complete: safe, and idle connections hold no timer
    self->read_turn();
  });
}

// --- Closing and liveness --------------------------------------------------------------------------

void WebSocketSession::slow_consumer() {
  ctx_->metrics.slow_consumer_closes.inc();
  spdlog::info("event=slow_consumer conn={} queued_bytes={}", id_, queued_bytes_);
  start_close(ws::kClosePolicy, "slow consumer", true);
}

void WebSocketSession::start_close(uint16_t code, std::string_view reason, bool drop) {
  assert(on_loop());
  if (close_started_ || finished_) return;
  close_started_ = true;
  close_code_ = code;
  if (drop) drop_unsent();
  enqueue(std::make_shared<const std::string>(ws::close_payload(code, reason)), ws::kClose);
  // However much is queued before the close frame, and whether or not the peer reads or
  // answers, the connection is cut at this deadline.
  deadline_ms_ =
      now_ms() + std::chrono::duration_cast<std::chrono::milliseconds>(ctx_->options.handshake_timeout).count();
  update_due();
  schedule_flush();
}

void WebSocketSession::finish() {
  if (finished_) return;
  finished_ = true;
  remove_from_loop();
  if (tls_ && !tls_->fatal) tls_close_notify(tls_->ssl.get());
  tls_.reset();  // the SSL (and its reference on the SSL_CTX) goes now
  boost::system::error_code ec;
  socket_.close(ec);  // pending waits complete with operation_aborted and find finished_
  pause_timer_.reset();
  size_t unsent = 0;
  for (size_t i = head_; i < queue_.size(); ++i) unsent += queue_[i].data->size();
  release_bytes(unsent);
  std::vector<Out>().swap(queue_);
  head_ = 0;
  // A reader that stopped reading may leave megabytes of frames freed here at once: see
  // HeapTrim for why they would otherwise stay resident.
  HeapTrim::released(socket_.get_executor(), unsent);
  free_input();
  slot_.release();
  if (opened_) {
    ctx_->metrics.connections.add(-1);
    spdlog::debug("event=ws_close conn={} code={}", id_, close_code_);
  }
  if (handler_) {
    auto handler = std::move(handler_);
    guarded("on_close", id_, [&] { handler->on_close(); });
  }
}

void WebSocketSession::on_tick(int64_t now) {
  if (finished_) return;
  if (now >= deadline_ms_) {
    spdlog::debug("event=ws_deadline conn={} handshake_done={} closing={}", id_, handshake_done_, close_started_);
    return finish();
  }
  const int64_t ping = std::chrono::duration_cast<std::chrono::milliseconds>(ctx_->options.ping_interval).count();
  if (ping > 0 && handshake_done_) {
    const int64_t silent = now - last_rx_ms_;
    // Only a peer that was pinged and stayed silent is dropped: the sweep runs every second,
    // so with a 1 s interval a late sweep could otherwise see 2 intervals pass with no ping sent.
    if (silent >= 2 * ping && ping_outstanding_) {
      spdlog::debug("event=ws_ping_timeout conn={}", id_);
      return finish();
    }
    if (silent >= ping && !ping_outstanding_ && !close_started_) {
      ping_outstanding_ = true;
      enqueue(empty_payload(), ws::kPing);
      schedule_flush();
    }
  }
  update_due();
}

void WebSocketSession::update_due() {
  int64_t due = deadline_ms_;
  const int64_t ping = std::chrono::duration_cast<std::chrono::milliseconds>(ctx_->options.ping_interval).count();
  if (ping > 0 && handshake_done_) due = std::min(due, last_rx_ms_ + (ping_outstanding_ ? 2 * ping : ping));
  due_ms_.store(due, std::memory_order_relaxed);
}

void WebSocketSession::add_to_loop() {
  std::lock_guard lock(loop_->mu);
  list_index_ = loop_->sessions.size();
  loop_->sessions.push_back(this);
  if (!loop_->sweep_armed) {
    loop_->sweep_armed = true;
    arm_sweep(loop_);
  }
}

void WebSocketSession::remove_from_loop() {
  std::lock_guard lock(loop_->mu);
  if (list_index_ == kNotListed) return;
  auto& sessions = loop_->sessions;
  WebSocketSession* last = sessions.back();
  sessions[list_index_] = last;
  last->list_index_ = list_index_;
  sessions.pop_back();
  list_index_ = kNotListed;
  if (sessions.empty()) std::vector<WebSocketSession*>().swap(sessions);
}

// Called with loop->mu held. The pending wait holds the Loop (its own io_context's object).
void WebSocketSession::arm_sweep(const std::shared_ptr<Loop>& loop) {
  loop->sweep_timer.expires_after(kSweepPeriod);
  loop->sweep_timer.async_wait([loop](const boost::system::error_code& ec) {
    if (!ec) sweep(loop);
  });
}

void WebSocketSession::sweep(const std::shared_ptr<Loop>& loop_ptr) {
  Loop& loop = *loop_ptr;
  const int64_t now = now_ms();
  std::vector<std::shared_ptr<WebSocketSession>> due;
  {
    std::lock_guard lock(loop.mu);
    for (WebSocketSession* s : loop.sessions) {
      if (s->due_ms_.load(std::memory_order_relaxed) > now) continue;
      // Null if the session is being destroyed (its destructor waits on mu to leave).
      if (auto session = s->weak_from_this().lock()) due.push_back(std::static_pointer_cast<WebSocketSession>(session));
    }
    if (loop.sessions.empty())
      loop.sweep_armed = false;  // re-armed by the next session: an idle loop holds no timer
    else
      arm_sweep(loop_ptr);
  }
  for (auto& s : due) {
    auto ex = s->socket_.get_executor();
    net::dispatch(ex, [s = std::move(s), now] { s->on_tick(now); });
  }
}

}  // namespace tern::gateway
