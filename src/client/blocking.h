// Waiting for an asynchronous SDK call from a thread that is NOT the SDK's io thread (a
// CLI's main thread, a test): wait_for(start, timeout) runs start(callback) and blocks until
// the callback or the timeout. Calling it on the io thread would deadlock: never do that.
// Thread-safe.
#pragma once
#include <chrono>
#include <future>
#include <memory>

#include "client/types.h"

namespace tern::client {

template <typename T, typename Start>
Result<T> wait_for(Start&& start, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  auto promise = std::make_shared<std::promise<Result<T>>>();
  auto future = promise->get_future();
  start(Callback<T>([promise](Result<T> r) { promise->set_value(std::move(r)); }));
  if (future.wait_for(timeout) != std::future_status::ready)
    return make_error(ErrorCode::kOverloaded, "network: timed out waiting for the server");
  return future.get();
}

}  // namespace tern::client
