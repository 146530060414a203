// Integration (issue 12): push for offline devices against the real ternd and a local push
// gateway (a small HTTP server on a raw socket inside the test) that fails, then recovers.
// Rules: src/services/push_notifier.h.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "support/server_test.h"

namespace tern::test {
namespace {

// A one-request-per-connection HTTP server on 127.0.0.1. Answers 503 to the first
// `failures` requests (or to all while `down`), then 200; keeps every request body.
class Receiver {
 public:
  explicit Receiver(int failures) : failures_(failures) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 16);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~Receiver() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/push"; }
  void set_down(bool down) { down_ = down; }
  int requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }
  // Waits (bounded) until a successful request's body satisfies pred; returns it.
  std::optional<json::object> wait_delivered(const std::function<bool(const json::object&)>& pred, ms timeout) {
    std::unique_lock lock(mu_);
    std::optional<json::object> found;
    cv_.wait_for(lock, timeout, [&] {
      for (const auto& b : delivered_)
        if (pred(b)) {
          found = b;
          return true;
        }
      return false;
    });
    return found;
  }
  std::vector<json::object> delivered() {
    std::lock_guard lock(mu_);
    return delivered_;
  }
  std::vector<std::string> paths() {
    std::lock_guard lock(mu_);
    return paths_;
  }

 private:
  void serve() {
    while (!stop_) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      timeval tv{5, 0};
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      std::string in;
      char buf[4096];
      size_t need = std::string::npos;
      for (int i = 0; i < 1000; ++i) {
        const auto head_end = in.find("\r\n\r\n");
        if (head_end != std::string::npos && need == std::string::npos) {
          const auto cl = in.find("Content-Length: ");
          need = head_end + 4 + (cl == std::string::npos ? 0 : std::stoul(in.substr(cl + 16)));
        }
        if (need != std::string::npos && in.size() >= need) break;
        const ssize_t n = ::read(c, buf, sizeof buf);
        if (n <= 0) break;
        in.append(buf, static_cast<size_t>(n));
      }
      bool fail;
      {
        std::lock_guard lock(mu_);
        ++requests_;
        fail = down_ || requests_ <= failures_;
        paths_.push_back(in.substr(0, in.find("\r\n")));
        const auto head_end = in.find("\r\n\r\n");
        if (!fail && head_end != std::string::npos) {
          boost::system::error_code ec;
          auto v = json::parse(in.substr(head_end + 4), ec);
          if (!ec && v.is_object()) delivered_.push_back(v.as_object());
        }
      }
      cv_.notify_all();
      const std::string out = fail ? "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                                   : "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      (void)!::write(c, out.data(), out.size());
      ::close(c);
    }
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  const int failures_;
  std::atomic<bool> down_{false};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  int requests_ = 0;
  std::vector<json::object> delivered_;
  std::vector<std::string> paths_;
  std::thread thread_;
};

bool names(const json::object& body, const std::string& user, int64_t device) {
  for (const auto& n : body.at("notifications").as_array())
    if (jstr(n.as_object(), "user") == user && jint(n.as_object(), "device") == device) return true;
  return false;
}

class Push : public ServerTest {};

HttpResult register_push(uint16_t port, const Account& a, const std::string& provider, const std::string& token) {
  return http_request(port, "POST", "/v1/devices/self/push",
                      json::serialize(json::object{{"provider", provider}, {"token", token}}), a.token);
}

TEST_F(Push, RegistrationIsValidatedAndBounded) {
  ASSERT_NO_FATAL_FAILURE(start_server());
  Account bob = api().must_register("bob");
  EXPECT_EQ(register_push(port(), bob, "fcm", "tok-1").status, 204);
  EXPECT_EQ(register_push(port(), bob, "FCM!", "tok-1").status, 400);
  EXPECT_EQ(register_push(port(), bob, "fcm", "").status, 400);
  EXPECT_EQ(register_push(port(), bob, "fcm", "has space").status, 400);
  EXPECT_EQ(register_push(port(), bob, "fcm", std::string(4097, 'a')).status, 400);
  EXPECT_EQ(http_request(port(), "POST", "/v1/devices/self/push", std::string("{\"provider\":1}"), bob.token).status, 400);
  EXPECT_EQ(http_request(port(), "POST", "/v1/devices/self/push", std::string("{}"), "").status, 401);
  EXPECT_EQ(http_request(port(), "DELETE", "/v1/devices/self/push", std::nullopt, bob.token).status, 204);
}

// The receiver fails the first three calls, then recovers: the offline device is pushed,
// once per batch, with its token and nothing of the message; an online device is not.
TEST_F(Push, OfflineDevicesAreWokenWithRetriesAndNoContent) {
  Receiver receiver(3);
  ASSERT_NO_FATAL_FAILURE(start_server({"--push-webhook", receiver.url(), "--push-attempts", "10"}));
  Account alice = api().must_register("alice");
  Account bob = api().must_register("bob");
  Account bob2 = api().must_link(bob);
  Account carol = api().must_register("carol");
  ASSERT_EQ(register_push(port(), bob, "fcm", "bob-phone-token").status, 204);
  ASSERT_EQ(register_push(port(), carol, "apns", "carol-token").status, 204);
  const std::string to_bob = api().must_direct(alice.token, "bob");
  const std::string to_carol = api().must_direct(alice.token, "carol");
  Device da(alice), dc(carol);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(dc.connect_synced(port()));  // carol is online: no push for her
  ASSERT_GT(da.must_send(to_carol, "c-1", "carol reads this live"), 0u);
  for (int i = 0; i < 5; ++i) ASSERT_GT(da.must_send(to_bob, "b-" + std::to_string(i), "secret words"), 0u);

  auto got = receiver.wait_delivered([&](const json::object& b) { return names(b, "bob", 1); }, ms(15000));
  ASSERT_TRUE(got) << "no push for bob:1 reached the receiver (" << receiver.requests() << " requests)";
  EXPECT_GE(receiver.requests(), 4) << "the failing calls were not retried";
  const std::string all = [&] {
    std::string s;
    for (const auto& b : receiver.delivered()) s += dump(b);
    return s;
  }();
  EXPECT_NE(all.find("bob-phone-token"), std::string::npos) << all;
  EXPECT_NE(all.find("\"provider\":\"fcm\""), std::string::npos) << all;
  EXPECT_EQ(all.find(b64("secret words")), std::string::npos) << "message content in a push: " << all;
  EXPECT_EQ(all.find("alice"), std::string::npos) << "the sender in a push: " << all;
  EXPECT_EQ(all.find(to_bob), std::string::npos) << "the conversation in a push: " << all;
  EXPECT_EQ(all.find("carol"), std::string::npos) << "an online device was pushed: " << all;
  EXPECT_FALSE(names(*got, "bob", 2)) << "bob:2 has no push registration";
  // Coalesced: five messages, bob:1 named in at most two delivered calls (one batch in flight
  // while more arrive can re-queue it once).
  int bob_calls = 0;
  for (const auto& b : receiver.delivered()) bob_calls += names(b, "bob", 1) ? 1 : 0;
  EXPECT_LE(bob_calls, 2);
  for (const auto& p : receiver.paths()) EXPECT_EQ(p, "POST /push HTTP/1.1");
  (void)bob2;
  // /metrics shows the retries.
  auto m = http_request(port(), "GET", "/metrics", std::nullopt, alice.token);
  EXPECT_NE(m.body.find("tern_push_failed_calls_total 3"), std::string::npos) << m.body.substr(0, 200);
}

// The receiver is down: the worker keeps retrying one device (batch 1) while the queue of 2
// fills; further offline devices overflow (dropped and counted), and nothing blocks sends.
TEST_F(Push, OverflowIsCountedAndNeverBlocksSends) {
  Receiver receiver(0);
  receiver.set_down(true);
  ASSERT_NO_FATAL_FAILURE(start_server({"--push-webhook", receiver.url(), "--push-queue", "2", "--push-batch", "1",
                                        "--push-attempts", "100"}));
  Account alice = api().must_register("alice");
  std::vector<std::string> convs;
  for (int i = 0; i < 6; ++i) {
    Account u = api().must_register("u" + std::to_string(i));
    ASSERT_EQ(register_push(port(), u, "fcm", "t" + std::to_string(i)).status, 204);
    convs.push_back(api().must_direct(alice.token, u.user));
  }
  Device da(alice);
  ASSERT_TRUE(da.connect_synced(port()));
  for (size_t i = 0; i < convs.size(); ++i)
    ASSERT_GT(da.must_send(convs[i], "m-" + std::to_string(i), "x"), 0u) << "a send waited for push";
  // One device is being retried, two wait: three of six overflowed (at least, whatever the
  // worker's timing: it holds at most one and the queue at most two).
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int64_t overflow = -1;
  while (std::chrono::steady_clock::now() < until) {
    auto m = http_request(port(), "GET", "/metrics", std::nullopt, da.account.token);
    const auto at = m.body.find("\ntern_push_overflow_total ");
    if (at != std::string::npos) overflow = std::stoll(m.body.substr(at + 26));
    if (overflow >= 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_GE(overflow, 3);
  // Recovery: the receiver comes back and the waiting devices are delivered.
  receiver.set_down(false);
  auto got = receiver.wait_delivered([](const json::object&) { return true; }, ms(15000));
  EXPECT_TRUE(got) << "no push after the receiver recovered";
}

}  // namespace
}  // namespace tern::test
