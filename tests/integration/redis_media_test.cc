// Integration: media on two nodes on one Redis that share one --media-dir (a shared
// filesystem in production; docs/scaling.md). A blob uploaded through one node is downloaded
// through the other, a resumable upload goes on through either node (its state is the shared
// directory's, so a load balancer may send each request anywhere), the quota counts what
// the other node stored, and a blob named by a send on one node is not collected by another.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "integration/redis_nodes.h"
#include "store/redis/redis_store.h"
#include "support/media_http.h"
#include "support/server_test.h"

namespace tern::test {
namespace {

std::string shared_media_dir() {
  const std::string dir = ::testing::TempDir() + "tern-shared-media-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  return dir;
}

// Two nodes sharing one --media-dir (a shared filesystem in production): a blob uploaded
// through node a is downloaded through node b by the member it was sent to; a stranger is
// refused there as on one node.
TEST_F(RedisTest, MediaUploadedThroughOneNodeIsDownloadedThroughAnother) {
  const std::string media = shared_media_dir();
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a", {"--media-dir", media}));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b", {"--media-dir", media}));
  Pair p;
  ASSERT_NO_FATAL_FAILURE(connected_pair(a_, p));
  const std::string blob = random_bytes(200000);
  auto up = upload(a_.server->port(), p.alice.token, blob);
  ASSERT_EQ(up.status, 201) << up.body;
  const std::string id = jstr(up.obj(), "media_id");
  ASSERT_EQ(id, sha256_hex(blob));
  json::object frame{{"type", "send"}, {"client_msg_id", "m-1"}, {"conversation_id", p.conv},
                     {"body", b64("see attachment")}, {"media", json::array{json::value(id)}}};
  ASSERT_TRUE(p.da->send_json(frame));
  auto sent = p.da->wait_answer("m-1");
  ASSERT_TRUE(sent) << "no answer";
  ASSERT_EQ(type_of(*sent), "sent") << dump(*sent);

  auto got = download(b_.server->port(), p.bob.token, id);
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(got.body, blob);
  const Account eve = b_.api->must_register("eve");
  EXPECT_EQ(download(b_.server->port(), eve.token, id).status, 404);
  // The blob is one file in the shared directory; each node's temporaries are its own.
  EXPECT_EQ(count_files(media + "/blobs"), 1u);
  EXPECT_TRUE(std::filesystem::is_directory(media + "/tmp/a"));
  EXPECT_TRUE(std::filesystem::is_directory(media + "/tmp/b"));
  std::filesystem::remove_all(media);
}

// Created through node a, its chunks through b and a in turn, its status asked of either.
// While a chunk streams into one node, a chunk of the same upload through the other is
// refused ("in progress"), so two nodes never append to it at once; a chunk cut off on one
// node is continued on the other from the last byte that arrived.
TEST_F(RedisTest, AResumableUploadGoesOnThroughEitherNode) {
  const std::string media = shared_media_dir();
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a", {"--media-dir", media}));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b", {"--media-dir", media}));
  const uint16_t pa = a_.server->port(), pb = b_.server->port();
  const Account alice = a_.api->must_register("alice");
  const Account bob = b_.api->must_register("bob");
  const std::map<std::string, std::string> auth{{"Authorization", "Bearer " + alice.token}};
  const std::string blob = random_bytes(150000);
  auto created = raw_http(pa, "POST", "/v1/media/uploads", auth, R"({"size":150000})");
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string target = "/v1/media/uploads/" + jstr(created.obj(), "upload_id");

  auto chunk = auth;
  chunk["Content-Range"] = "bytes 0-49999/150000";
  auto first = raw_http(pb, "PUT", target, chunk, std::string_view(blob).substr(0, 50000));
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(jint(first.obj(), "offset"), 50000);
  EXPECT_EQ(raw_http(pb, "GET", target, {{"Authorization", "Bearer " + bob.token}}, {}).status, 404);

  // The rest streams into b and stalls after 70,000 of its 100,000 bytes; b has written what
  // filled its 64 KiB read buffer.
  RawConn slow;
  ASSERT_TRUE(slow.connect(pb));
  ASSERT_TRUE(slow.write_all("PUT " + target + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + alice.token +
                             "\r\nContent-Range: bytes 50000-149999/150000\r\nContent-Length: 100000\r\n\r\n" +
                             blob.substr(50000, 70000)));
  int64_t offset = 0;
  ASSERT_TRUE(eventually([&] {
    auto st = raw_http(pa, "GET", target, auth, {});
    offset = jint(st.obj(), "offset");
    return st.status == 200 && offset > 50000;
  })) << "offset seen through a: " << offset;
  ASSERT_LT(offset, 120000);
  chunk["Content-Range"] = "bytes " + std::to_string(offset) + "-149999/150000";
  auto meanwhile = raw_http(pa, "PUT", target, chunk, std::string_view(blob).substr(static_cast<size_t>(offset)));
  EXPECT_EQ(meanwhile.status, 400) << meanwhile.body;
  EXPECT_NE(meanwhile.body.find("in progress"), std::string::npos) << meanwhile.body;

  // The stalled connection drops: b keeps every byte that arrived and lets go of the upload,
  // which a then finishes.
  slow.close();
  ASSERT_TRUE(eventually([&] {
    auto st = raw_http(pa, "GET", target, auth, {});
    offset = jint(st.obj(), "offset");
    return st.status == 200 && offset == 120000;
  })) << "offset seen through a: " << offset;
  chunk["Content-Range"] = "bytes 120000-149999/150000";
  RawHttp last;
  ASSERT_TRUE(eventually([&] {  // b may still be letting go of it
    last = raw_http(pa, "PUT", target, chunk, std::string_view(blob).substr(120000));
    return last.status != 400;
  })) << last.body;
  ASSERT_EQ(last.status, 201) << last.body;
  const std::string id = jstr(last.obj(), "media_id");
  EXPECT_EQ(id, sha256_hex(blob));
  auto got = download(pb, alice.token, id);
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(got.body, blob);
  EXPECT_EQ(raw_http(pb, "GET", target, auth, {}).status, 404);  // finished: gone on both
  EXPECT_EQ(count_files(media + "/uploads"), 0u);
  EXPECT_EQ(count_files(media + "/blobs"), 1u);
  std::filesystem::remove_all(media);
}

// The quota counts a user's blobs stored through another node: a node reads its copy of the
// user's stored bytes again once it is --redis-media-usage-ttl-ms old (1 ms here, so every
// upload below finds it stale). With the copy kept, node b would let 60,000 more in.
TEST_F(RedisTest, TheMediaQuotaCountsWhatAnotherNodeStored) {
  const std::string media = shared_media_dir();
  const std::vector<std::string> args{"--media-dir", media, "--max-media-bytes", "100000",
                                      "--media-quota-bytes", "150000", "--redis-media-usage-ttl-ms", "1"};
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a", args));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b", args));
  const uint16_t pa = a_.server->port(), pb = b_.server->port();
  const Account alice = a_.api->must_register("alice");
  ASSERT_EQ(upload(pb, alice.token, random_bytes(10000)).status, 201);  // b has read alice's usage
  ASSERT_EQ(upload(pa, alice.token, random_bytes(100000)).status, 201);
  // 110,000 stored: 60,000 more fit through neither node, 40,000 through either.
  auto over = upload(pb, alice.token, random_bytes(60000));
  EXPECT_EQ(over.status, 403) << over.body;
  EXPECT_NE(over.body.find("quota"), std::string::npos) << over.body;
  EXPECT_EQ(upload(pa, alice.token, random_bytes(60000)).status, 403);
  EXPECT_EQ(upload(pb, alice.token, random_bytes(40000)).status, 201);
  EXPECT_EQ(upload(pa, alice.token, random_bytes(1)).status, 403);
  std::filesystem::remove_all(media);
}

// A store of our own on the test's Redis, standing for a node that holds media marks (a
// send in flight there, or its sweep collecting); its marks are what any node would take.
std::unique_ptr<store::redis::RedisStore> another_node(const RedisServer& redis) {
  store::redis::RedisStoreOptions o;
  o.address = store::redis::RedisAddress{"127.0.0.1", redis.port()};
  auto s = store::redis::RedisStore::open(std::move(o));
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  return s.ok() ? std::move(*s) : nullptr;
}

// A send on one node holds a lease on the blobs it names until its commit; the sweep of
// every other node must skip those blobs meanwhile, or the message could name a blob that is
// gone. Here the lease is held on another node for as long as the test likes: both nodes'
// sweeps collect the blob uploaded beside it, skip the leased one, and collect it once the
// lease is given back (a skipped blob is looked at again by the next sweep).
TEST_F(RedisTest, ABlobLeasedOnAnotherNodeIsNotCollected) {
  const std::string media = shared_media_dir();
  const std::vector<std::string> args{"--media-dir", media, "--media-grace-ms", "1000", "--sweep-interval-ms", "100"};
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a", args));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b", args));
  const uint16_t pa = a_.server->port();
  const Account alice = a_.api->must_register("alice");
  auto other = another_node(redis_);
  ASSERT_TRUE(other);
  auto up_leased = upload(pa, alice.token, random_bytes(1000));
  ASSERT_EQ(up_leased.status, 201) << up_leased.body;
  const std::string leased = jstr(up_leased.obj(), "media_id");
  auto lease = other->mark_media(leased, store::Store::MediaMark::kLease, "other.1", 60'000);
  ASSERT_TRUE(lease.ok() && lease->value_or(false));
  auto up_free = upload(pa, alice.token, random_bytes(1100));
  ASSERT_EQ(up_free.status, 201) << up_free.body;
  const std::string free = jstr(up_free.obj(), "media_id");

  ASSERT_TRUE(eventually([&] { return download(pa, alice.token, free).status == 404; }, ms(20000)))
      << "the blob nothing names was not collected after the grace period";
  // Both nodes sweep every 100 ms: a few more sweeps of each.
  const auto sweeps_later = std::chrono::steady_clock::now() + ms(1000);
  ASSERT_TRUE(eventually([&] { return std::chrono::steady_clock::now() >= sweeps_later; }));
  EXPECT_EQ(download(pa, alice.token, leased).status, 200) << "collected under another node's lease";
  EXPECT_EQ(download(b_.server->port(), alice.token, leased).status, 200);

  ASSERT_TRUE(other->unmark_media(leased, store::Store::MediaMark::kLease, "other.1").ok());
  EXPECT_TRUE(eventually([&] { return download(pa, alice.token, leased).status == 404; }, ms(20000)))
      << "not collected once the lease was given back";
  // The sweep deletes the blob's rows (downloads answer 404 from then on), then its file.
  EXPECT_TRUE(eventually([&] { return count_files(media + "/blobs") == 0; }, ms(5000))) << count_files(media + "/blobs");
  std::filesystem::remove_all(media);
}

// The other way round: while another node's sweep collects a blob, a send naming it is
// refused as not found on every node (the sweep read no reference to it and may remove it
// any moment); once the collection is over (here: given up), the send goes through.
TEST_F(RedisTest, ASendNamingABlobAnotherNodeCollectsIsRefused) {
  const std::string media = shared_media_dir();
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a", {"--media-dir", media}));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b", {"--media-dir", media}));
  Pair p;
  ASSERT_NO_FATAL_FAILURE(connected_pair(b_, p));
  auto up = upload(a_.server->port(), p.alice.token, random_bytes(1000));
  ASSERT_EQ(up.status, 201) << up.body;
  const std::string id = jstr(up.obj(), "media_id");
  auto other = another_node(redis_);
  ASSERT_TRUE(other);
  auto collect = other->mark_media(id, store::Store::MediaMark::kCollect, "other", 60'000);
  ASSERT_TRUE(collect.ok() && collect->value_or(false));

  auto send = [&](const std::string& cmid) {
    json::object frame{{"type", "send"}, {"client_msg_id", cmid}, {"conversation_id", p.conv},
                       {"body", b64("see attachment")}, {"media", json::array{json::value(id)}}};
    EXPECT_TRUE(p.da->send_json(frame));
    return p.da->wait_answer(cmid);
  };
  auto refused = send("m-1");
  ASSERT_TRUE(refused) << "no answer";
  EXPECT_EQ(type_of(*refused), "error") << dump(*refused);
  EXPECT_EQ(jstr(*refused, "code"), "not_found") << dump(*refused);

  ASSERT_TRUE(other->unmark_media(id, store::Store::MediaMark::kCollect, "other").ok());
  auto sent = send("m-2");
  ASSERT_TRUE(sent) << "no answer";
  EXPECT_EQ(type_of(*sent), "sent") << dump(*sent);
  EXPECT_EQ(download(a_.server->port(), p.bob.token, id).status, 200);
  std::filesystem::remove_all(media);
}

}  // namespace
}  // namespace tern::test
