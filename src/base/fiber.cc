#include "base/fiber.h"

#include <cassert>
#include <thread>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/context/fiber.hpp>
#include <boost/context/protected_fixedsize_stack.hpp>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define TERN_ASAN_FIBERS 1
#endif

namespace tern {
namespace ctx = boost::context;

namespace {
thread_local Fiber* t_current = nullptr;

// protected_fixedsize_stack that tells the fiber where its stack is (for AddressSanitizer's
// stack-switch annotations).
struct RecordingStack {
  ctx::protected_fixedsize_stack inner;
  ctx::stack_context* out;
  ctx::stack_context allocate() {
    ctx::stack_context s = inner.allocate();
    *out = s;
    return s;
  }
  void deallocate(ctx::stack_context& s) noexcept { inner.deallocate(s); }
};

// A wait's state, shared with its handlers: they may run after the fiber stopped waiting
// (a cancelled wait), so they own what they touch.
struct WaitState {
  Fiber* fiber = nullptr;
  int pending = 0;         // handlers still to run
  bool ready = false;      // the descriptor became ready
  bool waiting = true;     // the fiber still waits for the handlers
};

void wake_if_last(const std::shared_ptr<WaitState>& st) {
  if (--st->pending == 0 && st->waiting) st->fiber->resume();
}
}  // namespace

struct Fiber::Impl {
  ctx::fiber inner;            // while suspended: where the fiber goes on
  ctx::fiber outer;            // while running: where suspend() returns to
  std::function<void()> body;
  ctx::stack_context stack{};  // the fiber's own stack
  bool cancelled = false;
#ifdef TERN_ASAN_FIBERS
  const void* outer_bottom = nullptr;  // the resumer's stack, to switch back to
  size_t outer_size = 0;
  void* fake_stack = nullptr;  // the fiber's fake stack while it is suspended
#endif
};

Fiber::Fiber(boost::asio::io_context& io, std::function<void()> body) : io_(io), impl_(std::make_unique<Impl>()) {
  impl_->body = std::move(body);
  impl_->inner = ctx::fiber(std::allocator_arg, RecordingStack{ctx::protected_fixedsize_stack(kStackBytes), &impl_->stack},
                            [this](ctx::fiber&& caller) {
                              impl_->outer = std::move(caller);
                              enter();
                              impl_->body();
                              done_ = true;
#ifdef TERN_ASAN_FIBERS
                              // Null: this fiber's fake stack is freed (it never runs again).
                              __sanitizer_start_switch_fiber(nullptr, impl_->outer_bottom, impl_->outer_size);
#endif
                              return std::move(impl_->outer);
                            });
}

// Whoever owns a fiber runs it to its end before destroying it (StoreReads cancels its
// fibers and resumes them until done): a suspended stack is never abandoned.
Fiber::~Fiber() { assert(done_ || !impl_->inner); }

void Fiber::enter() {
#ifdef TERN_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(impl_->fake_stack, &impl_->outer_bottom, &impl_->outer_size);
#endif
}

void Fiber::resume() {
  assert(!done_ && t_current == nullptr);
  t_current = this;
#ifdef TERN_ASAN_FIBERS
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, static_cast<char*>(impl_->stack.sp) - impl_->stack.size, impl_->stack.size);
#endif
  impl_->inner = std::move(impl_->inner).resume();
#ifdef TERN_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  t_current = nullptr;
}

void Fiber::cancel() { impl_->cancelled = true; }
bool Fiber::cancelled() const { return impl_->cancelled; }

Fiber* Fiber::current() { return t_current; }

void Fiber::suspend() {
  Fiber* self = t_current;
  assert(self);
  Impl& i = *self->impl_;
#ifdef TERN_ASAN_FIBERS
  __sanitizer_start_switch_fiber(&i.fake_stack, i.outer_bottom, i.outer_size);
#endif
  i.outer = std::move(i.outer).resume();
  self->enter();
}

bool Fiber::wait_fd(int fd, bool writable, std::chrono::steady_clock::time_point deadline) {
  Fiber* self = t_current;
  assert(self);
  if (self->cancelled()) return false;
  boost::system::error_code ec;
  boost::asio::posix::stream_descriptor sd(self->io_);
  sd.assign(fd, ec);  // registers the descriptor with the loop's reactor
  if (ec) return false;
  boost::asio::steady_timer timer(self->io_, deadline);
  auto st = std::make_shared<WaitState>();
  st->fiber = self;
  st->pending = 2;
  // Both handlers run before the fiber goes on (the second is the cancelled one), so that
  // neither outlives what it refers to on the fiber's stack (sd, timer).
  sd.async_wait(writable ? boost::asio::posix::stream_descriptor::wait_write
                         : boost::asio::posix::stream_descriptor::wait_read,
                [st, t = &timer](const boost::system::error_code& e) {
                  if (st->waiting) {
                    st->ready = !e;
                    t->cancel();
                  }
                  wake_if_last(st);
                });
  timer.async_wait([st, d = &sd](const boost::system::error_code& e) {
    if (st->waiting && !e) d->cancel();
    wake_if_last(st);
  });
  suspend();
  // Woken by both handlers, or by the owner after cancel() (then the handlers find
  // `waiting` false when the loop runs them, if it ever does: they own `st`).
  st->waiting = false;
  sd.release();  // the caller keeps the descriptor
  return st->pending == 0 && st->ready;
}

void Fiber::sleep_for(std::chrono::milliseconds d) {
  Fiber* self = t_current;
  if (!self) return std::this_thread::sleep_for(d);
  if (self->cancelled()) return;
  boost::asio::steady_timer timer(self->io_, d);
  auto st = std::make_shared<WaitState>();
  st->fiber = self;
  st->pending = 1;
  timer.async_wait([st](const boost::system::error_code&) { wake_if_last(st); });
  suspend();
  st->waiting = false;
}

}  // namespace tern
