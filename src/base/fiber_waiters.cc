#include "base/fiber_waiters.h"

#include <boost/asio/post.hpp>

namespace tern {

bool FiberWaiters::wait() {
  Fiber* self = Fiber::current();
  if (!self || self->cancelled()) return false;
  auto me = std::make_shared<Fiber*>(self);
  waiting_.push_back(me);
  Fiber::suspend();  // resumed by wake_all's post, or by the owner that ends the fiber
  *me = nullptr;
  return !self->cancelled();
}

void FiberWaiters::wake_all() {
  for (const auto& w : waiting_)
    if (*w) boost::asio::post((*w)->io(), [w] {
        if (*w) (*w)->resume();  // it clears *w itself
      });
  waiting_.clear();
}

}  // namespace tern
