// An io_context with one thread running it: the SDK's event loop when the application does
// not provide its own. Owns both; stop() (or destruction) ends the loop and joins the
// thread. Methods are thread-safe; stop() from the loop thread itself stops without joining
// (the destructor must not run on the loop thread).
#pragma once
#include <memory>

namespace boost::asio {
class io_context;
}

namespace tern::client {

class IoThread {
 public:
  IoThread();
  ~IoThread();
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  boost::asio::io_context& context();
  bool in_thread() const;
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tern::client
