// Issue 8, item 6: registration was unlimited (~1,900 accounts/s from one client). Now
// POST /v1/users is rate limited per source address (--register-rate 10/min,
// --register-burst 20 → 429 rate_limited); other addresses are not affected.
#include <gtest/gtest.h>

#include "harm.h"

namespace tern::test {
namespace {

class AdversarialRegistration : public ServerTest {};

// Bounds: from one address (127.0.0.3), at most 20 + 10/min × elapsed + 1 registrations
// succeed in 3 s, the rest get 429 rate_limited; another address (127.0.0.1) still registers;
// the probe's p99 stays within 2 × unloaded + 50 ms.
TEST_F(AdversarialRegistration, RegistrationIsRateLimitedPerAddress) {
  ASSERT_NO_FATAL_FAILURE(start_server(config_args({{"durability", "\"none\""}})));
  Probe probe(api(), port());
  ASSERT_TRUE(probe.ready());
  const HarmStats base = probe.measure(ms(2000));
  std::atomic<int> created{0}, limited{0}, other{0};
  std::string other_body;
  const auto t0 = std::chrono::steady_clock::now();
  HarmStats loaded;
  {
    AttackThread attack([&](const std::atomic<bool>& stop) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
      for (int i = 0; i < 20000 && !stop.load() && std::chrono::steady_clock::now() < until; ++i) {
        auto r = http_from("127.0.0.3", port(), "POST", "/v1/users",
                           json::serialize(json::object{{"user", "bot" + std::to_string(i)}}));
        if (r.status == 201) ++created;
        else if (r.status == 429 && r.error_code() == "rate_limited") ++limited;
        else if (other++ == 0) other_body = std::to_string(r.status) + " " + r.body;
      }
    });
    loaded = probe.measure(ms(3000));
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LE(created.load(), 20 + static_cast<int>(elapsed / 60 * 10) + 1)
      << "accounts registered from one address in " << elapsed << " s";
  EXPECT_GT(limited.load(), 0);
  EXPECT_EQ(other.load(), 0) << other_body;
  auto elsewhere = http_from("127.0.0.1", port(), "POST", "/v1/users", R"({"user":"honest"})");
  EXPECT_EQ(elsewhere.status, 201) << "another address is not limited: " << elsewhere.body;
  expect_harm_bounded(base, loaded, "registration flood");
}

}  // namespace
}  // namespace tern::test
