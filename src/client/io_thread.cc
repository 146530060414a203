#include "client/io_thread.h"

#include <cassert>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "base/log.h"

namespace tern::client {
namespace asio = boost::asio;

struct IoThread::Impl {
  asio::io_context ioc{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work{asio::make_work_guard(ioc)};
  std::thread thread;
  std::mutex mu;
};

IoThread::IoThread() : impl_(std::make_unique<Impl>()) {
  impl_->thread = std::thread([impl = impl_.get()] {
    // Handlers do not throw on the SDK's paths; a library exception is a bug worth a log
    // line, not a silent dead loop.
    for (;;) {
      try {
        impl->ioc.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("component=client event=io_exception what=\"{}\"", e.what());
      }
    }
  });
}

IoThread::~IoThread() {
  assert(!in_thread());
  stop();
}

asio::io_context& IoThread::context() { return impl_->ioc; }

bool IoThread::in_thread() const { return std::this_thread::get_id() == impl_->thread.get_id(); }

void IoThread::stop() {
  std::lock_guard lock(impl_->mu);
  impl_->work.reset();
  impl_->ioc.stop();
  if (!in_thread() && impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace tern::client
