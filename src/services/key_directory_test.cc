#include "services/key_directory.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <thread>

#include "base/clock.h"
#include "bus/local/local_bus.h"
#include "crypto/x25519.h"
#include "crypto/xeddsa.h"
#include "store/memory/memory_store.h"
#include "store/rocksdb/rocksdb_store.h"

namespace tern::services {
namespace {

using namespace std::chrono_literals;

std::string pub33(const crypto::PublicKey& k) {
  auto s = crypto::serialize_public(k);
  return std::string(reinterpret_cast<const char*>(s.data()), s.size());
}

// A device's key material, signed like a client signs it.
struct Identity {
  crypto::KeyPair pair = crypto::KeyPair::generate();
  std::string public_key() const { return pub33(pair.public_key); }
  store::SignedPrekey signed_prekey(uint32_t id) const {
    std::string pub = pub33(crypto::KeyPair::generate().public_key);
    auto sig = crypto::xeddsa_sign(std::span<const uint8_t, 32>(pair.private_key.data(), 32),
                                   std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(pub.data()), pub.size()));
    return store::SignedPrekey{id, pub, std::string(reinterpret_cast<const char*>(sig.data()), sig.size())};
  }
};

std::vector<store::OneTimePrekey> prekeys(uint32_t first, size_t n) {
  std::vector<store::OneTimePrekey> out;
  for (size_t i = 0; i < n; ++i) out.push_back({first + static_cast<uint32_t>(i), pub33(crypto::KeyPair::generate().public_key)});
  return out;
}

// Records the frames the bus delivers to one device.
class Recorder : public bus::Endpoint {
 public:
  void notify(std::shared_ptr<const bus::Notification> n) override {
    std::lock_guard lock(mu);
    frames.push_back(*n->frame);
  }
  void replaced() override {}
  std::vector<std::string> snapshot() {
    std::lock_guard lock(mu);
    return frames;
  }
  std::mutex mu;
  std::vector<std::string> frames;
};

class KeyDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("tern-keys-" + std::to_string(::getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    auto opened = store::RocksDbStore::open(dir_.string());
    ASSERT_TRUE(opened) << opened.error().message;
    store_ = std::move(*opened);
    options_.prekeys_low_threshold = 3;
    options_.max_prekeys_per_device = 500;
    options_.max_prekeys_per_upload = 500;
    committer_ = std::make_unique<GroupCommitter>(*store_, true, 65536, 4096);
    committer_->start();
    directory_ = std::make_unique<Directory>(*store_);
    keys_ = std::make_unique<KeyDirectory>(*store_, *committer_, *directory_, bus_, options_);
    store::Batch b;
    for (const char* u : {"alice", "bob"}) {
      b.add(store::PutUser{u, 1});
      b.add(store::PutDevice{DeviceRef{u, 1}, std::string(u) + "-t1"});
      b.add(store::PutDevice{DeviceRef{u, 2}, std::string(u) + "-t2"});
    }
    ASSERT_TRUE(store_->commit(b, false));
  }
  void TearDown() override {
    keys_.reset();
    committer_->stop();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  Result<KeyStatus> upload(const DeviceRef& d, KeyUpload up) {
    std::promise<Result<KeyStatus>> p;
    keys_->upload(d, std::move(up), [&](Result<KeyStatus> r) { p.set_value(std::move(r)); });
    auto f = p.get_future();
    if (f.wait_for(10s) != std::future_status::ready) return make_error(ErrorCode::kInternal, "no answer in 10 s");
    return f.get();
  }
  Result<std::vector<Bundle>> take(const std::string& user, std::optional<uint32_t> device = std::nullopt) {
    std::promise<Result<std::vector<Bundle>>> p;
    keys_->take_bundles(user, device, [&](Result<std::vector<Bundle>> r) { p.set_value(std::move(r)); });
    auto f = p.get_future();
    if (f.wait_for(10s) != std::future_status::ready) return make_error(ErrorCode::kInternal, "no answer in 10 s");
    return f.get();
  }
  KeyUpload full(const Identity& id, uint32_t reg, uint32_t spk_id, size_t otks, uint32_t first_otk = 1) {
    return KeyUpload{id.public_key(), reg, id.signed_prekey(spk_id), prekeys(first_otk, otks)};
  }

  std::filesystem::path dir_;
  std::unique_ptr<store::Store> store_;
  ServiceOptions options_;
  std::atomic<int64_t> skew_us_{0};  // the bus clock's lead on the system clock
  bus::LocalBus bus_{[this] { return tern::wall_us() + skew_us_.load(); }};
  std::unique_ptr<GroupCommitter> committer_;
  std::unique_ptr<Directory> directory_;
  std::unique_ptr<KeyDirectory> keys_;
  const DeviceRef bob1_{"bob", 1}, bob2_{"bob", 2}, alice1_{"alice", 1};
};

TEST_F(KeyDirectoryTest, FirstUploadNeedsIdentityRegistrationAndSignedPrekey) {
  Identity id;
  auto r = upload(bob1_, KeyUpload{std::nullopt, std::nullopt, std::nullopt, prekeys(1, 5)});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  r = upload(bob1_, KeyUpload{id.public_key(), 7, std::nullopt, {}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  r = upload(bob1_, full(id, 7, 1, 5));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->one_time_prekeys, 5u);
  EXPECT_EQ(r->signed_prekey_id, 1u);
  EXPECT_FALSE(r->previous_signed_prekey_id);
  EXPECT_EQ(*keys_->registration_id(bob1_), 7u);
  EXPECT_EQ(*keys_->registration_id(bob2_), 0u) << "no keys: 0";
}

TEST_F(KeyDirectoryTest, BadSignatureIsRefusedAndNothingStored) {
  Identity id, other;
  KeyUpload up = full(id, 7, 1, 5);
  up.signed_prekey = other.signed_prekey(1);  // signed by another identity key
  auto r = upload(bob1_, up);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kBadSignature);
  up.signed_prekey = id.signed_prekey(1);
  up.signed_prekey->signature[5] ^= 1;  // one flipped bit
  r = upload(bob1_, up);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kBadSignature);
  auto stored = store_->device_keys(bob1_);
  ASSERT_TRUE(stored);
  EXPECT_FALSE(*stored);
  EXPECT_TRUE(store_->one_time_prekeys(bob1_, 10)->empty());
}

TEST_F(KeyDirectoryTest, RotationKeepsThePreviousSignedPrekeyForTheGracePeriod) {
  Identity id;
  ASSERT_TRUE(upload(bob1_, full(id, 7, 1, 0)));
  const store::SignedPrekey second = id.signed_prekey(2);
  auto r = upload(bob1_, KeyUpload{std::nullopt, std::nullopt, second, {}});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->signed_prekey_id, 2u);
  ASSERT_TRUE(r->previous_signed_prekey_id);
  EXPECT_EQ(*r->previous_signed_prekey_id, 1u);
  EXPECT_GT(r->previous_signed_prekey_until, 0);
  // The same signed prekey again changes nothing (a retried upload).
  auto again = upload(bob1_, KeyUpload{std::nullopt, std::nullopt, second, {}});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->previous_signed_prekey_id, 1u);
  auto b = take("bob", 1);
  ASSERT_TRUE(b) << b.error().message;
  ASSERT_EQ(b->size(), 1u);
  EXPECT_EQ((*b)[0].signed_prekey, second) << "bundles carry the current one only";
  // Past the grace period the previous one is no longer reported, and dropped at the next write.
  options_.signed_prekey_grace_ms = 0;
  EXPECT_FALSE(keys_->status(bob1_)->previous_signed_prekey_id);
  ASSERT_TRUE(upload(bob1_, KeyUpload{std::nullopt, std::nullopt, std::nullopt, prekeys(1, 1)}));
  EXPECT_FALSE((*store_->device_keys(bob1_))->previous_signed_prekey);
}

// The grace is compared by whichever node answers (several nodes on Redis), so it is timed by
// the bus's clock, the one the nodes share, not the system's.
TEST_F(KeyDirectoryTest, TheGraceIsTimedByTheBusClock) {
  options_.signed_prekey_grace_ms = 60'000;
  Identity id;
  ASSERT_TRUE(upload(bob1_, full(id, 7, 1, 0)));
  skew_us_ = 40'000'000;  // the bus clock 40 s ahead
  auto r = upload(bob1_, KeyUpload{std::nullopt, std::nullopt, id.signed_prekey(2), {}});
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_TRUE(r->previous_signed_prekey_id);
  EXPECT_GT(r->previous_signed_prekey_until, tern::wall_us() / 1000 + 90'000) << "replaced at the bus's time";
  skew_us_ = 40'000'000 + 61'000'000;  // 61 s later on the bus clock, none on the system's
  auto st = keys_->status(bob1_);
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_FALSE(st->previous_signed_prekey_id) << "the grace ended by the bus clock";
  ASSERT_TRUE(upload(bob1_, KeyUpload{std::nullopt, std::nullopt, std::nullopt, prekeys(1, 1)}));
  EXPECT_FALSE((*store_->device_keys(bob1_))->previous_signed_prekey) << "and is dropped at the next write";
}

TEST_F(KeyDirectoryTest, NewIdentityNeedsNewRegistrationAndDropsOldPrekeys) {
  Identity id, reinstalled;
  ASSERT_TRUE(upload(bob1_, full(id, 7, 1, 20)));
  auto r = upload(bob1_, full(reinstalled, 7, 1, 3, 100));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << "same registration id with a new identity";
  r = upload(bob1_, KeyUpload{reinstalled.public_key(), 8, std::nullopt, {}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << "a new identity needs a new signed prekey";
  // The signed prekey is checked against the new identity key, not the stored one.
  KeyUpload wrong = full(reinstalled, 8, 1, 3, 100);
  wrong.signed_prekey = id.signed_prekey(1);
  r = upload(bob1_, wrong);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kBadSignature);
  r = upload(bob1_, full(reinstalled, 8, 1, 3, 100));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->one_time_prekeys, 3u) << "the old identity's prekeys are gone";
  EXPECT_EQ(*keys_->registration_id(bob1_), 8u);
  auto ids = keys_->identities("bob");
  ASSERT_TRUE(ids);
  ASSERT_EQ(ids->size(), 2u);
  EXPECT_EQ((*ids)[0].identity_key, reinstalled.public_key());
  EXPECT_FALSE((*ids)[1].identity_key);
  EXPECT_EQ(keys_->identities("nobody").error().code, ErrorCode::kNotFound);
}

TEST_F(KeyDirectoryTest, PrekeysPerDeviceAreCapped) {
  options_.max_prekeys_per_device = 10;
  Identity id;
  ASSERT_TRUE(upload(bob1_, full(id, 7, 1, 8)));
  auto r = upload(bob1_, KeyUpload{std::nullopt, std::nullopt, std::nullopt, prekeys(100, 3)});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kLimitExceeded);
  r = upload(bob1_, KeyUpload{std::nullopt, std::nullopt, std::nullopt, prekeys(5, 6)});  // ids 5..10: 3 are new
  ASSERT_TRUE(r) << "re-uploaded ids replace, they do not add: " << r.error().message;
  EXPECT_EQ(r->one_time_prekeys, 10u);
}

TEST_F(KeyDirectoryTest, BundlesTakeOnePrekeyPerDeviceUntilNoneAreLeft) {
  Identity i1, i2;
  ASSERT_TRUE(upload(bob1_, full(i1, 11, 1, 2)));
  ASSERT_TRUE(upload(bob2_, full(i2, 12, 1, 1, 50)));
  auto first = take("bob");
  ASSERT_TRUE(first) << first.error().message;
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ((*first)[0].one_time_prekey->id, 1u);
  EXPECT_EQ((*first)[0].identity_key, i1.public_key());
  EXPECT_EQ((*first)[0].registration_id, 11u);
  EXPECT_EQ((*first)[1].one_time_prekey->id, 50u);
  auto second = take("bob");
  ASSERT_TRUE(second);
  EXPECT_EQ((*second)[0].one_time_prekey->id, 2u);
  EXPECT_FALSE((*second)[1].one_time_prekey) << "device 2 ran out: its bundle has none";
  auto third = take("bob", 1);
  ASSERT_TRUE(third);
  ASSERT_EQ(third->size(), 1u);
  EXPECT_FALSE((*third)[0].one_time_prekey);
  EXPECT_EQ(keys_->status(bob1_)->one_time_prekeys, 0u);
  EXPECT_EQ(take("alice", 1).error().code, ErrorCode::kNotFound) << "a device without keys";
  EXPECT_EQ(take("bob", 9).error().code, ErrorCode::kNotFound);
  EXPECT_EQ(take("nobody").error().code, ErrorCode::kNotFound);
  auto none = take("alice");
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty()) << "a user none of whose devices has keys";
}

// Many threads fetch the same device's bundle at once: every key goes to exactly one of
// them, and every key is handed out (none lost).
TEST_F(KeyDirectoryTest, ConcurrentTakesHandEachPrekeyToExactlyOneRequester) {
  constexpr size_t kKeys = 300;
  constexpr int kThreads = 16, kPerThread = 25;  // 400 fetches for 300 keys
  Identity id;
  ASSERT_TRUE(upload(bob1_, full(id, 7, 1, kKeys)));
  std::mutex mu;
  std::vector<uint32_t> got;
  size_t without = 0, failures = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        auto b = take("bob", 1);
        std::lock_guard lock(mu);
        if (!b || b->size() != 1) ++failures;
        else if ((*b)[0].one_time_prekey) got.push_back((*b)[0].one_time_prekey->id);
        else ++without;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0u);
  std::set<uint32_t> distinct(got.begin(), got.end());
  EXPECT_EQ(got.size(), kKeys) << "every key handed out";
  EXPECT_EQ(distinct.size(), got.size()) << "no key handed out twice";
  EXPECT_EQ(without, kThreads * kPerThread - kKeys);
  EXPECT_EQ(*distinct.begin(), 1u);
  EXPECT_EQ(*distinct.rbegin(), kKeys);
  EXPECT_TRUE(store_->one_time_prekeys(bob1_, 10)->empty()) << "every handed-out key is deleted";
}

TEST_F(KeyDirectoryTest, LowEventWhenTheCountDropsBelowTheThresholdAndOnConnect) {
  auto rec = std::make_shared<Recorder>();
  bus_.attach(bob1_, rec);
  Identity id;
  ASSERT_TRUE(upload(bob1_, full(id, 7, 1, 5)));  // threshold 3
  EXPECT_FALSE(keys_->low_frame(bob1_));
  ASSERT_TRUE(take("bob", 1));  // 4 left
  ASSERT_TRUE(take("bob", 1));  // 3 left: not below
  EXPECT_TRUE(rec->snapshot().empty());
  ASSERT_TRUE(take("bob", 1));  // 2 left: dropped below
  EXPECT_EQ(rec->snapshot(), (std::vector<std::string>{R"({"type":"prekeys_low","count":2})"}));
  ASSERT_TRUE(take("bob", 1));  // 1 left: still low, no repeat
  EXPECT_EQ(rec->snapshot().size(), 1u);
  EXPECT_EQ(keys_->low_frame(bob1_), R"({"type":"prekeys_low","count":1})") << "on connect while low";
  ASSERT_TRUE(upload(bob1_, KeyUpload{std::nullopt, std::nullopt, std::nullopt, prekeys(100, 10)}));
  EXPECT_FALSE(keys_->low_frame(bob1_)) << "refilled";
  EXPECT_FALSE(keys_->low_frame(bob2_)) << "a device without keys is not told";
}

TEST_F(KeyDirectoryTest, ConcurrentUploadOfOneDeviceIsRefusedNotMerged) {
  // Two uploads of one device race: each either commits whole or is refused with
  // rate_limited (never a mix of the two records).
  Identity id;
  ASSERT_TRUE(upload(bob1_, full(id, 7, 1, 0)));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0}, refused{0};
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      auto r = upload(bob1_, KeyUpload{std::nullopt, std::nullopt, std::nullopt, prekeys(1000 * (t + 1), 10)});
      if (r) ++ok;
      else if (r.error().code == ErrorCode::kRateLimited) ++refused;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok + refused, 8);
  EXPECT_GE(ok.load(), 1);
  EXPECT_EQ(keys_->status(bob1_)->one_time_prekeys, static_cast<size_t>(ok.load()) * 10);
}

// Two nodes on one store (two key directories): the other node's cached registration id of a
// device stays what it read until the change is announced to it (the bus's user-changed sink
// calls forget_registration; a resync, forget_registrations), then it reads the new one.
TEST_F(KeyDirectoryTest, AnotherNodesCachedRegistrationIdGoesWhenTheChangeIsAnnounced) {
  KeyDirectory other(*store_, *committer_, *directory_, bus_, options_);
  Identity id, second, third;
  ASSERT_TRUE(upload(bob1_, full(id, 7, 1, 3)));
  EXPECT_EQ(*other.registration_id(bob1_), 7u);
  ASSERT_TRUE(upload(bob1_, full(second, 8, 1, 3, 100)));
  EXPECT_EQ(*other.registration_id(bob1_), 7u) << "cached: nothing was announced to it";
  other.forget_registration(bob1_);
  EXPECT_EQ(*other.registration_id(bob1_), 8u);
  ASSERT_TRUE(upload(bob1_, full(third, 9, 1, 3, 200)));
  ASSERT_TRUE(other.prefetch_registrations({bob1_, bob2_}));
  EXPECT_EQ(*other.registration_id(bob1_), 8u);
  other.forget_registrations();
  EXPECT_FALSE(other.registrations_cached({bob1_}));
  ASSERT_TRUE(other.prefetch_registrations({bob1_, bob2_}));
  std::vector<uint32_t> ids;
  ASSERT_TRUE(other.registrations_cached({bob1_, bob2_}, &ids));
  EXPECT_EQ(ids, (std::vector<uint32_t>{9u, 0u}));
}

}  // namespace
}  // namespace tern::services
