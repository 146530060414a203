// Integration: the key directory of the real ternd (docs/protocol.md, "Key directory"):
// uploads and their validation, bad signatures, bundle fetches that take exactly one
// one-time prekey (also from concurrent requesters on separate connections), exhaustion,
// the count, the prekeys_low event, the fetch rate limit, signed prekey rotation, stale
// devices in device_mismatch, and the key-distribution metric.
#include <gtest/gtest.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "client/keyring.h"
#include "crypto/keys.h"
#include "support/key_install.h"
#include "support/server_test.h"

namespace tern::test {
namespace {

class TerndKeys : public ServerTest {
 protected:
  void start(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--register-burst", "1000"};
    args.insert(args.end(), extra.begin(), extra.end());
    ASSERT_NO_FATAL_FAILURE(start_server(args));
    alice = api().must_register("alice");
    bob = api().must_register("bob");
  }
  HttpResult get(const Account& by, const std::string& target) {
    return http_request(port(), "GET", target, std::nullopt, by.token);
  }
  // The one-time prekey id of each device in a bundle answer (-1: none).
  static std::vector<int64_t> otk_ids(const HttpResult& r) {
    std::vector<int64_t> out;
    const json::value* devs = r.obj().if_contains("devices");
    if (!devs || !devs->is_array()) return out;
    for (const auto& d : devs->as_array()) {
      const json::value* otk = d.as_object().if_contains("one_time_prekey");
      out.push_back(otk ? jint(otk->as_object(), "id") : -1);
    }
    return out;
  }
  Account alice, bob;
};

TEST_F(TerndKeys, UploadThenCountAndDeviceList) {
  ASSERT_NO_FATAL_FAILURE(start());
  Install a;
  auto up = put_keys(port(), alice, a.upload(1, 1, 5));
  ASSERT_EQ(up.status, 200) << up.body;
  EXPECT_EQ(jint(up.obj(), "count"), 5);
  EXPECT_EQ(jint(up.obj(), "signed_prekey_id"), 1);
  auto count = get(alice, "/v1/keys");
  ASSERT_EQ(count.status, 200) << count.body;
  EXPECT_EQ(jint(count.obj(), "count"), 5);
  EXPECT_FALSE(count.obj().contains("previous_signed_prekey_id"));

  Account alice2 = api().must_link(alice);
  auto devices = get(bob, "/v1/users/alice/devices");
  ASSERT_EQ(devices.status, 200) << devices.body;
  const auto& list = devices.obj().at("devices").as_array();
  ASSERT_EQ(list.size(), 2u) << devices.body;
  EXPECT_EQ(jint(list[0].as_object(), "device"), 1);
  EXPECT_EQ(jstr(list[0].as_object(), "identity_key"), a.identity_b64());
  EXPECT_EQ(jint(list[0].as_object(), "registration_id"), a.registration_id);
  EXPECT_EQ(jint(list[1].as_object(), "device"), 2);
  EXPECT_FALSE(list[1].as_object().contains("identity_key")) << "device 2 has not uploaded keys";

  EXPECT_EQ(get(bob, "/v1/users/nobody/devices").status, 404);
  EXPECT_EQ(http_request(port(), "GET", "/v1/keys", std::nullopt, "").status, 401);
  EXPECT_EQ(http_request(port(), "GET", "/v1/keys/alice", std::nullopt, "bad-token").status, 401);
  EXPECT_EQ(http_request(port(), "PUT", "/v1/keys", json::serialize(a.upload(1, 1, 1)), "").status, 401);
}

TEST_F(TerndKeys, BadSignatureAndMalformedUploadsAreRefused) {
  ASSERT_NO_FATAL_FAILURE(start({"--max-prekeys-per-upload", "10"}));
  Install a;
  json::object bad = a.upload(1, 1, 3);
  bad["signed_prekey"] = a.signed_prekey(1, /*corrupt=*/true);
  auto r = put_keys(port(), alice, bad);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.error_code(), "bad_signature") << r.body;
  Install other;
  bad["signed_prekey"] = other.signed_prekey(1);  // valid signature, by another identity key
  r = put_keys(port(), alice, bad);
  EXPECT_EQ(r.error_code(), "bad_signature") << r.body;
  EXPECT_EQ(get(bob, "/v1/keys/alice").obj().at("devices").as_array().size(), 0u) << "nothing was stored";

  auto expect_code = [&](json::object body, int status, std::string_view code, std::string_view what) {
    auto res = put_keys(port(), alice, body);
    EXPECT_EQ(res.status, status) << what << ": " << res.body;
    EXPECT_EQ(res.error_code(), code) << what << ": " << res.body;
  };
  json::object short_key = a.upload(1, 1, 1);
  short_key["identity_key"] = b64(std::string(32, 'x'));
  expect_code(short_key, 400, "invalid_argument", "32-byte identity key");
  json::object wrong_type = a.upload(1, 1, 1);
  wrong_type["identity_key"] = b64(std::string(1, '\x04') + std::string(32, 'x'));
  expect_code(wrong_type, 400, "invalid_argument", "type byte not 0x05");
  json::object not_b64 = a.upload(1, 1, 1);
  not_b64["identity_key"] = "!!!!";
  expect_code(not_b64, 400, "malformed", "not base64");
  json::object short_sig = a.upload(1, 1, 1);
  short_sig["signed_prekey"].as_object()["signature"] = b64(std::string(63, 's'));
  expect_code(short_sig, 400, "invalid_argument", "63-byte signature");
  json::object zero_reg = a.upload(1, 1, 1);
  zero_reg["registration_id"] = 0;
  expect_code(zero_reg, 400, "invalid_argument", "registration id 0");
  expect_code(a.upload(1, 1, 11), 413, "too_large", "11 one-time prekeys, 10 allowed");
  json::object dup = a.upload(1, 1, 2);
  dup["one_time_prekeys"].as_array()[1].as_object()["id"] = 1;
  expect_code(dup, 400, "invalid_argument", "duplicate prekey ids");
  expect_code(json::object{{"one_time_prekeys", Install::prekeys(1, 2)}}, 400, "invalid_argument",
              "first upload without identity");
  auto not_json = http_request(port(), "PUT", "/v1/keys", std::string("{nope"), alice.token);
  EXPECT_EQ(not_json.status, 400);
  EXPECT_EQ(get(bob, "/v1/keys/NOT-A-USER").status, 400);
  EXPECT_EQ(get(bob, "/v1/keys/alice/0").status, 400);
  EXPECT_EQ(get(bob, "/v1/keys/alice/x").status, 400);

  // And the correct upload still works afterwards.
  EXPECT_EQ(put_keys(port(), alice, a.upload(1, 1, 3)).status, 200);
}

TEST_F(TerndKeys, EachFetchTakesOnePrekeyUntilExhausted) {
  ASSERT_NO_FATAL_FAILURE(start());
  Install a1, a2;
  Account alice2 = api().must_link(alice);
  ASSERT_EQ(put_keys(port(), alice, a1.upload(1, 10, 2)).status, 200);
  ASSERT_EQ(put_keys(port(), alice2, a2.upload(1, 20, 1)).status, 200);

  auto all = get(bob, "/v1/keys/alice");
  ASSERT_EQ(all.status, 200) << all.body;
  EXPECT_EQ(otk_ids(all), (std::vector<int64_t>{10, 20}));
  const auto& d1 = all.obj().at("devices").as_array()[0].as_object();
  EXPECT_EQ(jstr(d1, "identity_key"), a1.identity_b64());
  EXPECT_EQ(jint(d1, "registration_id"), a1.registration_id);
  EXPECT_EQ(jint(d1.at("signed_prekey").as_object(), "id"), 1);
  EXPECT_EQ(unb64(jstr(d1.at("signed_prekey").as_object(), "signature")).size(), 64u);

  auto one = get(bob, "/v1/keys/alice/1");
  ASSERT_EQ(one.status, 200) << one.body;
  EXPECT_EQ(otk_ids(one), (std::vector<int64_t>{11}));
  auto empty = get(bob, "/v1/keys/alice");
  ASSERT_EQ(empty.status, 200);
  EXPECT_EQ(otk_ids(empty), (std::vector<int64_t>{-1, -1})) << "exhausted: bundles without one-time prekeys";
  EXPECT_EQ(jint(get(alice, "/v1/keys").obj(), "count"), 0);
  EXPECT_EQ(jint(get(alice2, "/v1/keys").obj(), "count"), 0);
  EXPECT_EQ(get(bob, "/v1/keys/bob/1").status, 404) << "bob has no keys";
  EXPECT_EQ(get(bob, "/v1/keys/alice/3").status, 404);
  EXPECT_EQ(get(bob, "/v1/keys/nobody").status, 404);
}

TEST_F(TerndKeys, ConcurrentFetchersOnSeparateConnectionsNeverGetTheSameKey) {
  ASSERT_NO_FATAL_FAILURE(start());
  constexpr size_t kKeys = 60;
  constexpr int kFetchers = 8, kEach = 10;  // 80 fetches for 60 keys
  Install a;
  ASSERT_EQ(put_keys(port(), alice, a.upload(1, 1, kKeys)).status, 200);
  std::vector<Account> fetchers;
  for (int i = 0; i < kFetchers; ++i) fetchers.push_back(api().must_register("fetcher" + std::to_string(i)));
  std::mutex mu;
  std::vector<int64_t> got;
  int without = 0, failed = 0;
  std::vector<std::thread> threads;
  for (int i = 0; i < kFetchers; ++i)
    threads.emplace_back([&, i] {
      for (int j = 0; j < kEach; ++j) {
        auto r = http_request(port(), "GET", "/v1/keys/alice/1", std::nullopt, fetchers[i].token);
        auto ids = otk_ids(r);
        std::lock_guard lock(mu);
        if (r.status != 200 || ids.size() != 1) ++failed;
        else if (ids[0] < 0) ++without;
        else got.push_back(ids[0]);
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed, 0);
  const std::set<int64_t> distinct(got.begin(), got.end());
  EXPECT_EQ(got.size(), kKeys) << "every key handed out";
  EXPECT_EQ(distinct.size(), got.size()) << "no key handed out twice";
  EXPECT_EQ(without, kFetchers * kEach - static_cast<int>(kKeys));
  EXPECT_EQ(jint(get(alice, "/v1/keys").obj(), "count"), 0);
}

TEST_F(TerndKeys, LowDeviceGetsAnEventWhenItDropsBelowAndOnConnect) {
  ASSERT_NO_FATAL_FAILURE(start({"--prekeys-low-threshold", "3"}));
  Install a;
  ASSERT_EQ(put_keys(port(), alice, a.upload(1, 1, 5)).status, 200);
  Device phone(alice);
  auto before = phone.connect_synced(port());
  ASSERT_TRUE(before);
  EXPECT_TRUE(only_type(*before, "prekeys_low").empty()) << "5 left, threshold 3";
  ASSERT_EQ(get(bob, "/v1/keys/alice/1").status, 200);  // 4 left
  ASSERT_EQ(get(bob, "/v1/keys/alice/1").status, 200);  // 3 left
  ASSERT_EQ(get(bob, "/v1/keys/alice/1").status, 200);  // 2 left: below
  auto low = phone.read_until("prekeys_low");
  ASSERT_TRUE(low) << "no prekeys_low within the deadline";
  EXPECT_EQ(jint(*low, "count"), 2);
  phone.close();

  // Connecting while low: the event comes again, before synced.
  Device again(alice);
  auto frames = again.connect_synced(port());
  ASSERT_TRUE(frames);
  auto lows = only_type(*frames, "prekeys_low");
  ASSERT_EQ(lows.size(), 1u) << dump_frames(*frames);
  EXPECT_EQ(jint(lows[0], "count"), 2);
  again.close();

  // The client refills; then no event on connect.
  auto refill = put_keys(port(), alice, json::object{{"one_time_prekeys", Install::prekeys(100, 10)}});
  ASSERT_EQ(refill.status, 200) << refill.body;
  EXPECT_EQ(jint(refill.obj(), "count"), 12);
  Device after(alice);
  auto quiet = after.connect_synced(port());
  ASSERT_TRUE(quiet);
  EXPECT_TRUE(only_type(*quiet, "prekeys_low").empty()) << dump_frames(*quiet);
}

TEST_F(TerndKeys, BundleFetchesAreRateLimitedPerRequester) {
  ASSERT_NO_FATAL_FAILURE(start({"--key-fetch-rate", "0.01", "--key-fetch-burst", "3"}));
  Install a;
  ASSERT_EQ(put_keys(port(), alice, a.upload(1, 1, 10)).status, 200);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(get(bob, "/v1/keys/alice").status, 200) << i;
  auto limited = get(bob, "/v1/keys/alice/1");
  EXPECT_EQ(limited.status, 429) << limited.body;
  EXPECT_EQ(limited.error_code(), "rate_limited");
  Account bob2 = api().must_link(bob);
  EXPECT_EQ(get(bob2, "/v1/keys/alice").status, 429) << "the limit is per user, not per device";
  Account carol = api().must_register("carol");
  EXPECT_EQ(get(carol, "/v1/keys/alice").status, 200) << "another requester is not affected";
  EXPECT_EQ(get(bob, "/v1/keys").status, 200) << "own status is not a bundle fetch";
  EXPECT_EQ(jint(get(alice, "/v1/keys").obj(), "count"), 6) << "a refused fetch takes no key";
}

TEST_F(TerndKeys, SignedPrekeyRotationKeepsThePreviousForTheGracePeriod) {
  ASSERT_NO_FATAL_FAILURE(start({"--signed-prekey-grace-seconds", "2"}));
  Install a;
  ASSERT_EQ(put_keys(port(), alice, a.upload(1, 1, 3)).status, 200);
  const json::object second = a.signed_prekey(2);
  auto rotated = put_keys(port(), alice, json::object{{"signed_prekey", second}});
  ASSERT_EQ(rotated.status, 200) << rotated.body;
  EXPECT_EQ(jint(rotated.obj(), "signed_prekey_id"), 2);
  EXPECT_EQ(jint(rotated.obj(), "previous_signed_prekey_id"), 1);
  EXPECT_GT(jint(rotated.obj(), "previous_signed_prekey_until"), 0);
  EXPECT_EQ(jint(rotated.obj(), "count"), 3) << "a rotation keeps the one-time prekeys";

  auto bundle = get(bob, "/v1/keys/alice/1");
  ASSERT_EQ(bundle.status, 200);
  const auto& spk = bundle.obj().at("devices").as_array()[0].as_object().at("signed_prekey").as_object();
  EXPECT_EQ(jint(spk, "id"), 2);
  EXPECT_EQ(jstr(spk, "public_key"), jstr(second, "public_key"));

  // A rotation signed by another key is refused and changes nothing.
  Install other;
  auto bad = put_keys(port(), alice, json::object{{"signed_prekey", other.signed_prekey(3)}});
  EXPECT_EQ(bad.error_code(), "bad_signature");

  // After the grace period the previous one is no longer reported.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  json::object status;
  do {
    status = get(alice, "/v1/keys").obj();
    if (!status.contains("previous_signed_prekey_id")) break;
    std::this_thread::sleep_for(ms(100));
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_FALSE(status.contains("previous_signed_prekey_id")) << dump(status);
  EXPECT_EQ(jint(status, "signed_prekey_id"), 2);
}

TEST_F(TerndKeys, DeviceMismatchNamesStaleDevicesAfterANewInstallation) {
  ASSERT_NO_FATAL_FAILURE(start());
  const std::string conv = api().must_direct(alice.token, "bob");
  ASSERT_FALSE(conv.empty());
  Install old_install;
  ASSERT_EQ(put_keys(port(), bob, old_install.upload(1, 1, 3)).status, 200);
  Device sender(alice);
  ASSERT_TRUE(sender.connect_synced(port()));
  auto send = [&](const std::string& cmid, const json::object& bodies, const json::object& regs) {
    json::object f{{"type", "send"}, {"client_msg_id", cmid}, {"conversation_id", conv}, {"bodies", bodies}};
    if (!regs.empty()) f["registration_ids"] = regs;
    EXPECT_TRUE(sender.send_json(f));
    auto answer = sender.wait_answer(cmid);
    return answer ? *answer : json::object{};
  };
  const json::object body_b1{{"bob:1", b64("c1")}};
  auto ok = send("m1", body_b1, json::object{{"bob:1", old_install.registration_id}});
  EXPECT_EQ(type_of(ok), "sent") << dump(ok);

  // Bob reinstalls: a new identity key and registration id.
  Install fresh;
  while (fresh.registration_id == old_install.registration_id) fresh.registration_id = 1 + crypto::random_u32() % 16380;
  ASSERT_EQ(put_keys(port(), bob, fresh.upload(1, 1, 3)).status, 200);
  auto stale = send("m2", body_b1, json::object{{"bob:1", old_install.registration_id}});
  ASSERT_EQ(type_of(stale), "error") << dump(stale);
  EXPECT_EQ(jstr(stale, "code"), "device_mismatch");
  EXPECT_EQ(dump(stale.at("stale")), R"(["bob:1"])") << dump(stale);
  EXPECT_EQ(dump(stale.at("missing")), "[]");
  EXPECT_EQ(dump(stale.at("extra")), "[]");

  // The sender re-reads the device list, encrypts for the new keys: accepted.
  auto devices = get(alice, "/v1/users/bob/devices");
  EXPECT_EQ(jint(devices.obj().at("devices").as_array()[0].as_object(), "registration_id"), fresh.registration_id);
  EXPECT_EQ(type_of(send("m3", body_b1, json::object{{"bob:1", fresh.registration_id}})), "sent");

  // Bob links a device: missing (and stale stays empty for the devices that are right).
  Account bob2 = api().must_link(bob);
  auto added = send("m4", body_b1, json::object{{"bob:1", fresh.registration_id}});
  ASSERT_EQ(jstr(added, "code"), "device_mismatch") << dump(added);
  EXPECT_EQ(dump(added.at("missing")), R"(["bob:2"])");
  EXPECT_EQ(dump(added.at("stale")), "[]");
  // A device without keys that the sender claims to know is stale too.
  auto nokeys = send("m5", json::object{{"bob:1", b64("c")}, {"bob:2", b64("c")}},
                     json::object{{"bob:1", fresh.registration_id}, {"bob:2", 77}});
  EXPECT_EQ(dump(nokeys.at("stale")), R"(["bob:2"])") << dump(nokeys);
  // Without registration_ids the answer keeps its wire-v1 shape (no "stale").
  auto old_style = send("m6", body_b1, json::object{});
  ASSERT_EQ(jstr(old_style, "code"), "device_mismatch");
  EXPECT_FALSE(old_style.contains("stale")) << dump(old_style);
  EXPECT_EQ(type_of(send("m7", json::object{{"bob:1", b64("c")}, {"bob:2", b64("c")}}, json::object{})), "sent");
}

TEST_F(TerndKeys, KeyPayloadsAreCountedPerRecipientDevice) {
  ASSERT_NO_FATAL_FAILURE(start());
  Account carol = api().must_register("carol");
  Account bob2 = api().must_link(bob);
  Account alice2 = api().must_link(alice);
  const std::string group = api().must_group(alice.token, "g", {"bob", "carol"});
  ASSERT_FALSE(group.empty());
  const double before = metric(alice, "tern_key_distribution_payloads_total");
  ASSERT_GE(before, 0) << "the counter is exported";
  Device sender(alice);
  ASSERT_TRUE(sender.connect_synced(port()));
  json::object bodies{{"alice:2", b64("k")}, {"bob:1", b64("k")}, {"bob:2", b64("k")}, {"carol:1", b64("k")}};
  ASSERT_TRUE(sender.send_json(json::object{{"type", "send"}, {"client_msg_id", "skd-1"}, {"conversation_id", group},
                                            {"bodies", bodies}, {"keys", true}}));
  auto sent = sender.wait_answer("skd-1");
  ASSERT_TRUE(sent && type_of(*sent) == "sent") << (sent ? dump(*sent) : "none");
  EXPECT_EQ(metric(alice, "tern_key_distribution_payloads_total"), before + 4) << "4 recipient devices";
  // An ordinary message does not count.
  EXPECT_GT(sender.must_send(group, "plain-1", "hello"), 0u);
  EXPECT_EQ(metric(alice, "tern_key_distribution_payloads_total"), before + 4);
  // The recipient gets the payload on the normal durable path (replay included).
  Device carol_phone(carol);
  auto replay = carol_phone.connect_synced(port());
  ASSERT_TRUE(replay);
  auto msgs = only_type(*replay, "message", group);
  ASSERT_GE(msgs.size(), 2u) << dump_frames(*replay);
  bool found = false;
  for (const auto& m : msgs) found = found || unb64(jstr(m, "body")) == "k";
  EXPECT_TRUE(found) << dump_frames(*replay);
}

// The SDK's Keyring through the real server: each device uploads its keys; a sender fetches
// bundles, encrypts once per recipient device (its own other device included) and sends
// `bodies` with `registration_ids`; every device decrypts its entry; the plaintext appears
// nowhere in the server's data directory, its log or what backfill returns.
TEST_F(TerndKeys, KeyringSessionsThroughTheServerNeverExposePlaintext) {
  ASSERT_NO_FATAL_FAILURE(start());
  Account alice2 = api().must_link(alice);
  Account bob2 = api().must_link(bob);
  const std::string conv = api().must_direct(alice.token, "bob");
  ASSERT_FALSE(conv.empty());
  char tmpl[] = "/tmp/tern-keyring-it-XXXXXX";
  const std::string root = mkdtemp(tmpl);
  std::map<std::string, std::unique_ptr<client::Keyring>> rings;
  for (const Account* a : {&alice, &alice2, &bob, &bob2}) {
    auto k = client::Keyring::open(root + "/" + a->key());
    ASSERT_TRUE(k) << k.error().message;
    auto body = (*k)->upload_body(true, 5);
    ASSERT_TRUE(body);
    auto up = http_request(port(), "PUT", "/v1/keys", *body, a->token);
    ASSERT_EQ(up.status, 200) << up.body;
    rings[a->key()] = std::move(*k);
  }
  client::Keyring& sender = *rings["alice:1"];
  // Sessions with every recipient device: bob's two and alice's other one.
  json::object regs;
  for (const std::string user : {"bob", "alice"}) {
    auto fetched = get(alice, "/v1/keys/" + user);
    ASSERT_EQ(fetched.status, 200) << fetched.body;
    auto bundles = client::parse_bundles(fetched.body);
    ASSERT_TRUE(bundles) << bundles.error().message;
    for (const auto& b : *bundles) {
      const std::string key = user + ":" + std::to_string(b.device);
      if (key == "alice:1") continue;
      ASSERT_TRUE(sender.start_session(key, b.bundle)) << key;
      regs[key] = sender.session_registration(key);
    }
  }
  ASSERT_EQ(regs.size(), 3u);
  const std::string canary = "canary-plaintext-4c1d9e";
  json::object bodies;
  for (const auto& [key, _] : regs) {
    auto c = sender.encrypt(std::string(key), canary + " for " + std::string(key));
    ASSERT_TRUE(c) << c.error().message;
    bodies[key] = *c;
  }
  Device phone(alice);
  ASSERT_TRUE(phone.connect_synced(port()));
  ASSERT_TRUE(phone.send_json(json::object{{"type", "send"}, {"client_msg_id", "e2e-1"}, {"conversation_id", conv},
                                           {"bodies", bodies}, {"registration_ids", regs}}));
  auto sent = phone.wait_answer("e2e-1");
  ASSERT_TRUE(sent && type_of(*sent) == "sent") << (sent ? dump(*sent) : "none");

  for (const Account* a : {&alice2, &bob, &bob2}) {
    Device d(*a);
    auto frames = d.connect_synced(port());
    ASSERT_TRUE(frames) << a->key();
    auto msgs = only_type(*frames, "message", conv);
    ASSERT_EQ(msgs.size(), 1u) << a->key() << dump_frames(*frames);
    auto plain = rings[a->key()]->decrypt("alice:1", jstr(msgs[0], "body"));
    ASSERT_TRUE(plain) << a->key() << ": " << plain.error().message;
    EXPECT_EQ(*plain, canary + " for " + a->key());
  }
  // The server holds ciphertext only.
  for (const auto& entry : std::filesystem::recursive_directory_iterator(server_->data_dir())) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string data((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(data.find(canary), std::string::npos) << entry.path();
  }
  EXPECT_EQ(server_->log_tail(1 << 20).find(canary), std::string::npos);
  auto history = api().messages(bob.token, conv);
  EXPECT_EQ(history.status, 200);
  EXPECT_EQ(history.body.find(canary), std::string::npos);
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace tern::test
