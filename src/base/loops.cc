#include "base/loops.h"

#include "base/fiber.h"

#include <cassert>

#include <boost/asio/post.hpp>

#include "base/thread_name.h"

namespace tern {
namespace {
thread_local size_t tl_loop = Loops::kNone;
thread_local const Loops* tl_owner = nullptr;
}  // namespace

Loops::Loops(size_t count) {
  for (size_t i = 0; i < std::max<size_t>(1, count); ++i) loops_.push_back(std::make_unique<Loop>());
}

Loops::~Loops() {
  stop();
  join();
}

std::vector<boost::asio::io_context*> Loops::contexts() {
  std::vector<boost::asio::io_context*> out;
  for (auto& l : loops_) out.push_back(&l->io);
  return out;
}

// A fiber on a loop's thread (StoreReads' reads) is no part of that loop's work: like a
// reader thread, it sees kNone, and what it hands to a loop is queued, never run inline on
// the fiber's stack (where a suspension would interleave it with the loop's other work).
size_t Loops::here() const { return tl_owner == this && !Fiber::current() ? tl_loop : kNone; }
size_t Loops::thread_loop() const { return tl_owner == this ? tl_loop : kNone; }

void Loops::run_here(size_t i) {
  const size_t saved_loop = tl_loop;
  const Loops* saved_owner = tl_owner;
  tl_loop = i;
  tl_owner = this;
  // No restart() here: a stop() that came before this thread got going (a short-lived
  // Loops, a loaded machine) must still end the loop, not be undone.
  loops_[i]->io.run();
  tl_loop = saved_loop;
  tl_owner = saved_owner;
}

void Loops::run(size_t dst, Task task) {
  assert(dst < loops_.size());
  if (tl_loop == dst && tl_owner == this && !Fiber::current()) {
    task();
    return;
  }
  post(dst, std::move(task));
}

void Loops::post(size_t dst, Task task) {
  assert(dst < loops_.size());
  Loop& loop = *loops_[dst];
  bool wake = false;
  {
    std::lock_guard lock(loop.mu);
    loop.inbox.push_back(std::move(task));
    if (!loop.scheduled) loop.scheduled = wake = true;
  }
  if (wake) boost::asio::post(loop.io, [this, &loop] { drain(loop); });
}

void Loops::drain(Loop& loop) {
  {
    std::lock_guard lock(loop.mu);
    loop.draining.swap(loop.inbox);
    loop.scheduled = false;
  }
  // Tasks queued while these run go to the next drain (posted by their post()).
  for (auto& t : loop.draining) t();
  loop.draining.clear();
  if (loop.draining.capacity() > 4096) loop.draining.shrink_to_fit();
}

void Loops::start() {
  for (size_t i = 0; i < loops_.size(); ++i) {
    loops_[i]->thread = std::thread([this, i] {
      set_thread_name("tern-loop" + std::to_string(i));
      run_here(i);
    });
  }
}

void Loops::release() {
  for (auto& l : loops_) l->guard.reset();
}

void Loops::stop() {
  for (auto& l : loops_) l->io.stop();
}

void Loops::join() {
  for (auto& l : loops_)
    if (l->thread.joinable() && l->thread.get_id() != std::this_thread::get_id()) l->thread.join();
}

}  // namespace tern
