// Test support: a GoogleTest fixture with a real ternd (TerndProcess, its data in a fresh
// temp dir removed afterwards), an io thread for Api calls, register_user() and api_for();
// and eventually(), which polls a condition until a deadline. Header-only, since it needs
// GoogleTest (tern_client_testing does not link it). Not part of the SDK; one test thread.
#pragma once
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "client/api.h"
#include "client/blocking.h"
#include "client/io_thread.h"
#include "client/server_url.h"
#include "client/testing/ternd_process.h"

namespace tern::client::testing {

// Polls `pred` every 10 ms until it holds or `timeout` passed; its last value.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

class TerndFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    binary_ = find_ternd();
    ASSERT_FALSE(binary_.empty()) << "ternd binary not found (set TERN_BIN_DIR or build ternd into build/bin)";
    dir_ = make_temp_dir("tern-client-it");
    ASSERT_FALSE(dir_.empty());
    server_ = std::make_unique<TerndProcess>(binary_, dir_ + "/data");
    auto r = server_->start();
    ASSERT_TRUE(r.ok()) << r.error().message;
    auto url = parse_server_url(server_->url());
    ASSERT_TRUE(url.ok());
    url_ = *url;
  }
  void TearDown() override {
    server_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  Credentials register_user(const std::string& user) {
    Api api(io_.context(), url_);
    auto c = wait_for<Credentials>([&](Callback<Credentials> cb) { api.register_user(user, std::move(cb)); });
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
    return c.ok() ? *c : Credentials{};
  }
  Api api_for(const Credentials& c) { return Api(io_.context(), url_, c.token); }

  std::string binary_, dir_;
  std::unique_ptr<TerndProcess> server_;
  ServerUrl url_;
  IoThread io_;
};

}  // namespace tern::client::testing
