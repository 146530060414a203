// Integration: media attachments against the real ternd (issue 11). Upload/download round
// trip with ranges, a resumed upload after a dropped connection, the access rule (404 to
// non-members and for messages after a removal), media named by send frames, oversize and
// truncated uploads leaving nothing, quota, garbage collection, and a plaintext canary in
// an encrypted attachment found nowhere on the server.
#include <gtest/gtest.h>

#include <filesystem>

#include "client/attachment_cipher.h"
#include "support/media_http.h"
#include "support/trio_test.h"

namespace tern::test {
namespace {

std::map<std::string, std::string> auth(const Account& a) { return {{"Authorization", "Bearer " + a.token}}; }

json::object send_frame(std::string_view conv, std::string_view cmid, std::string_view body,
                        const std::vector<std::string>& media, std::optional<int64_t> ttl = std::nullopt) {
  json::object o{{"type", "send"}, {"client_msg_id", cmid}, {"conversation_id", conv}, {"body", b64(body)}};
  json::array ids;
  for (const auto& m : media) ids.emplace_back(m);
  o["media"] = std::move(ids);
  if (ttl) o["ttl"] = *ttl;
  return o;
}

class TerndMedia : public TrioTest {
 protected:
  std::string media_dir() const { return server_->data_dir() + "/media"; }
  std::string must_upload(const Account& a, const std::string& bytes) {
    auto r = upload(port(), a.token, bytes);
    EXPECT_EQ(r.status, 201) << r.body;
    EXPECT_EQ(jstr(r.obj(), "media_id"), sha256_hex(bytes));
    return jstr(r.obj(), "media_id");
  }
  // PUT bytes [first, first + n) of `blob` as alice's chunk of the resumable upload `target`
  // (whose size is blob.size()).
  RawHttp put_chunk(const std::string& target, std::string_view blob, size_t first, size_t n) {
    auto h = auth(alice);
    h["Content-Range"] = "bytes " + std::to_string(first) + "-" + std::to_string(first + n - 1) + "/" +
                         std::to_string(blob.size());
    return raw_http(port(), "PUT", target, h, blob.substr(first, n));
  }
  // Sends a message naming `media` and returns the server's answer frame.
  std::optional<json::object> send_media(Device& d, std::string_view conv, std::string_view cmid,
                                         const std::vector<std::string>& media,
                                         std::optional<int64_t> ttl = std::nullopt) {
    if (!d.send_json(send_frame(conv, cmid, "see attachment", media, ttl))) return std::nullopt;
    return d.wait_answer(cmid);
  }
};

TEST_F(TerndMedia, RoundTripWithRanges) {
  ASSERT_NO_FATAL_FAILURE(start());
  const std::string blob = random_bytes(300000);
  const std::string id = must_upload(alice, blob);
  ASSERT_FALSE(id.empty());

  auto whole = download(port(), alice.token, id);
  ASSERT_EQ(whole.status, 200);
  EXPECT_EQ(whole.body, blob);
  EXPECT_EQ(whole.headers["accept-ranges"], "bytes");
  EXPECT_EQ(whole.headers["content-type"], "application/octet-stream");

  struct Case { std::string range; uint64_t first, last; };
  for (const Case& c : {Case{"bytes=1000-1999", 1000, 1999}, Case{"bytes=299990-", 299990, 299999},
                        Case{"bytes=-10", 299990, 299999}, Case{"bytes=0-0", 0, 0},
                        Case{"bytes=299000-400000", 299000, 299999}}) {
    auto part = download(port(), alice.token, id, c.range);
    ASSERT_EQ(part.status, 206) << c.range;
    EXPECT_EQ(part.body, blob.substr(c.first, c.last - c.first + 1)) << c.range;
    EXPECT_EQ(part.headers["content-range"],
              "bytes " + std::to_string(c.first) + "-" + std::to_string(c.last) + "/300000")
        << c.range;
  }
  auto beyond = download(port(), alice.token, id, "bytes=300000-");
  EXPECT_EQ(beyond.status, 416);
  EXPECT_EQ(beyond.headers["content-range"], "bytes */300000");
  EXPECT_FALSE(beyond.body.empty());

  // The same ciphertext uploaded again is the same id, one file.
  EXPECT_EQ(must_upload(alice, blob), id);
  EXPECT_EQ(count_files(media_dir() + "/blobs"), 1u);
}

TEST_F(TerndMedia, ResumedUploadContinuesAfterADroppedConnection) {
  ASSERT_NO_FATAL_FAILURE(start());
  const std::string blob = random_bytes(250000);
  auto created = raw_http(port(), "POST", "/v1/media/uploads", auth(alice), R"({"size":250000})");
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string uid = jstr(created.obj(), "upload_id");
  ASSERT_FALSE(uid.empty());
  EXPECT_EQ(jint(created.obj(), "offset"), 0);
  const std::string target = "/v1/media/uploads/" + uid;

  auto h = auth(alice);
  h["Content-Range"] = "bytes 0-99999/250000";
  auto first = raw_http(port(), "PUT", target, h, std::string_view(blob).substr(0, 100000));
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(jint(first.obj(), "offset"), 100000);

  // The second chunk's connection drops after 40,000 of its 150,000 bytes.
  h["Content-Range"] = "bytes 100000-249999/250000";
  ASSERT_TRUE(send_truncated(port(), "PUT", target, h, 150000, std::string_view(blob).substr(100000, 40000)));
  int64_t offset = 0;
  ASSERT_TRUE(eventually([&] {
    auto st = raw_http(port(), "GET", target, auth(alice), {});
    offset = jint(st.obj(), "offset");
    return st.status == 200 && offset == 140000;
  })) << "offset " << offset;

  // A chunk that does not start at the offset is refused and says where to resume.
  h["Content-Range"] = "bytes 100000-249999/250000";
  auto wrong = raw_http(port(), "PUT", target, h, std::string_view(blob).substr(100000));
  EXPECT_EQ(wrong.status, 400);
  EXPECT_EQ(jint(wrong.obj(), "offset"), 140000);
  // Another user cannot see or continue it; an id that is not one (32 lowercase hex) names none.
  EXPECT_EQ(raw_http(port(), "GET", target, auth(bob), {}).status, 404);
  h["Content-Range"] = "bytes 140000-249999/250000";
  EXPECT_EQ(raw_http(port(), "PUT", target, {{"Authorization", "Bearer " + bob.token}, {"Content-Range", h["Content-Range"]}},
                     std::string_view(blob).substr(140000)).status, 404);
  for (const std::string& bad : std::vector<std::string>{"../../blobs", "..%2F..%2Fblobs", uid.substr(0, 31), std::string(32, 'A')})
    EXPECT_EQ(raw_http(port(), "GET", "/v1/media/uploads/" + bad, auth(alice), {}).status, 404) << bad;

  h["Content-Range"] = "bytes 140000-249999/250000";
  auto last = raw_http(port(), "PUT", target, h, std::string_view(blob).substr(140000));
  ASSERT_EQ(last.status, 201) << last.body;
  EXPECT_EQ(jstr(last.obj(), "media_id"), sha256_hex(blob));
  auto back = download(port(), alice.token, sha256_hex(blob));
  ASSERT_EQ(back.status, 200);
  EXPECT_EQ(back.body, blob);
  EXPECT_EQ(raw_http(port(), "GET", target, auth(alice), {}).status, 404);  // finished: gone
  EXPECT_EQ(count_files(media_dir() + "/tmp"), 0u);
  EXPECT_EQ(count_files(media_dir() + "/uploads"), 0u);
}

// A resumable upload is kept on disk, not in the server's memory: a SIGKILL and a restart
// between two chunks lose nothing of it.
TEST_F(TerndMedia, AResumableUploadGoesOnAfterTheServerIsKilledAndRestarted) {
  ASSERT_NO_FATAL_FAILURE(start());
  const std::string blob = random_bytes(120000);
  auto created = raw_http(port(), "POST", "/v1/media/uploads", auth(alice), R"({"size":120000})");
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string target = "/v1/media/uploads/" + jstr(created.obj(), "upload_id");
  ASSERT_EQ(put_chunk(target, blob, 0, 50000).status, 200);

  ASSERT_NO_FATAL_FAILURE(restart_server());
  auto st = raw_http(port(), "GET", target, auth(alice), {});
  ASSERT_EQ(st.status, 200) << st.body;
  EXPECT_EQ(jint(st.obj(), "offset"), 50000);
  EXPECT_EQ(jint(st.obj(), "size"), 120000);
  EXPECT_EQ(raw_http(port(), "GET", target, auth(bob), {}).status, 404);
  auto last = put_chunk(target, blob, 50000, 70000);
  ASSERT_EQ(last.status, 201) << last.body;
  EXPECT_EQ(jstr(last.obj(), "media_id"), sha256_hex(blob));
  auto back = download(port(), alice.token, sha256_hex(blob));
  ASSERT_EQ(back.status, 200);
  EXPECT_EQ(back.body, blob);
  EXPECT_EQ(count_files(media_dir() + "/uploads"), 0u);
}

TEST_F(TerndMedia, AccessIsRefusedWith404ToNonMembers) {
  ASSERT_NO_FATAL_FAILURE(start());
  const std::string id = must_upload(alice, random_bytes(1000));
  // Nobody but the uploader before a message names it; unknown and malformed ids alike.
  EXPECT_EQ(download(port(), bob.token, id).status, 404);
  EXPECT_EQ(download(port(), alice.token, std::string(64, 'a')).status, 404);
  EXPECT_EQ(download(port(), alice.token, "..%2F..%2Fetc").status, 404);
  EXPECT_EQ(download(port(), "nope", id).status, 401);

  Device da(alice), db(bob);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(db.connect_synced(port()));
  auto sent = send_media(da, direct, "m-1", {id});
  ASSERT_TRUE(sent);
  ASSERT_EQ(type_of(*sent), "sent") << dump(*sent);
  auto got = db.read_until("message");
  ASSERT_TRUE(got);
  ASSERT_TRUE(got->contains("media")) << dump(*got);
  EXPECT_EQ(dump(got->at("media")), "[\"" + id + "\"]");
  EXPECT_EQ(download(port(), bob.token, id).status, 200);
  EXPECT_EQ(download(port(), carol.token, id).status, 404);

  // A group: carol sees what was sent while she was a member, not what came after her removal.
  const std::string group = api().must_group(alice.token, "g", {"bob", "carol"});
  const std::string before = must_upload(alice, random_bytes(500));
  const std::string after = must_upload(alice, random_bytes(600));
  auto s1 = send_media(da, group, "g-1", {before});
  ASSERT_TRUE(s1);
  ASSERT_EQ(type_of(*s1), "sent") << dump(*s1);
  ASSERT_EQ(api().remove_members(alice.token, group, {"carol"}).status, 200);
  auto s2 = send_media(da, group, "g-2", {after});
  ASSERT_TRUE(s2);
  ASSERT_EQ(type_of(*s2), "sent") << dump(*s2);
  EXPECT_EQ(download(port(), carol.token, before).status, 200);
  EXPECT_EQ(download(port(), carol.token, after).status, 404);
  EXPECT_EQ(download(port(), bob.token, after).status, 200);
  // Bob may forward what he can see; carol may not name what she cannot.
  auto fwd = send_media(db, direct, "f-1", {after});
  ASSERT_TRUE(fwd);
  EXPECT_EQ(type_of(*fwd), "sent") << dump(*fwd);
  const std::string direct_bc = api().must_direct(carol.token, "bob");
  Device dc(carol);
  ASSERT_TRUE(dc.connect_synced(port()));
  auto refused = send_media(dc, direct_bc, "c-1", {after});
  ASSERT_TRUE(refused);
  EXPECT_EQ(type_of(*refused), "error");
  EXPECT_EQ(jstr(*refused, "code"), "not_found");
}

TEST_F(TerndMedia, SendFramesValidateTheirMedia) {
  ASSERT_NO_FATAL_FAILURE(start());
  Device da(alice);
  ASSERT_TRUE(da.connect_synced(port()));
  auto unknown = send_media(da, direct, "u-1", {std::string(64, 'c')});
  ASSERT_TRUE(unknown);
  EXPECT_EQ(jstr(*unknown, "code"), "not_found") << dump(*unknown);
  auto bad = send_media(da, direct, "u-2", {"not-an-id"});
  ASSERT_TRUE(bad);
  EXPECT_EQ(jstr(*bad, "code"), "invalid_argument") << dump(*bad);
  std::vector<std::string> many;
  for (int i = 0; i < 17; ++i) many.push_back(std::string(63, 'a') + "0123456789abcdef"[i % 16]);
  auto too_many = send_media(da, direct, "u-3", many);
  ASSERT_TRUE(too_many);
  EXPECT_EQ(jstr(*too_many, "code"), "too_large") << dump(*too_many);
  // Without `media` a send is exactly wire-v1's.
  EXPECT_GT(da.must_send(direct, "u-4", "plain"), 0u);
}

TEST_F(TerndMedia, OversizeAndTruncatedUploadsLeaveNothing) {
  ASSERT_NO_FATAL_FAILURE(start({"--max-media-bytes", "100000", "--media-quota-bytes", "150000"}));
  // Oversize: refused at the headers, before the body is read.
  RawConn c;
  ASSERT_TRUE(c.connect(port()));
  ASSERT_TRUE(c.write_all("POST /v1/media HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + alice.token +
                          "\r\nContent-Length: 200000\r\n\r\n"));
  std::string answer;
  ASSERT_TRUE(eventually([&] {
    answer += c.read_some(ms(100));
    return answer.find("\r\n\r\n") != std::string::npos;
  }));
  EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0u) << answer;
  EXPECT_NE(answer.find("too_large"), std::string::npos);
  c.close();

  // Truncated: the connection drops after half the body.
  ASSERT_TRUE(send_truncated(port(), "POST", "/v1/media", auth(alice), 50000, random_bytes(25000)));
  // The quota counts the interrupted upload only while it lasts: afterwards 100,000 fit.
  ASSERT_TRUE(eventually([&] { return upload(port(), alice.token, random_bytes(100000)).status == 201; }));
  EXPECT_EQ(count_files(media_dir() + "/tmp"), 0u);
  EXPECT_EQ(count_files(media_dir() + "/blobs"), 1u);
  // Over the quota now (100,000 kept + 60,000 > 150,000).
  auto over = upload(port(), alice.token, random_bytes(60000));
  EXPECT_EQ(over.status, 403);
  EXPECT_EQ(over.obj().contains("error") ? jstr(over.obj(), "error") : "", "limit_exceeded");
  EXPECT_EQ(count_files(media_dir()), 1u);
  // A resumable upload announcing too much is refused too.
  EXPECT_EQ(raw_http(port(), "POST", "/v1/media/uploads", auth(alice), R"({"size":100001})").status, 413);
  // An upload in progress counts with its announced size, before any byte of it arrived:
  // 100,000 kept + 40,000 announced leave no room for 20,000 more, whole or resumable.
  ASSERT_EQ(raw_http(port(), "POST", "/v1/media/uploads", auth(alice), R"({"size":40000})").status, 201);
  EXPECT_EQ(upload(port(), alice.token, random_bytes(20000)).status, 403);
  EXPECT_EQ(raw_http(port(), "POST", "/v1/media/uploads", auth(alice), R"({"size":20000})").status, 403);
  EXPECT_EQ(upload(port(), alice.token, random_bytes(10000)).status, 201);
}

TEST_F(TerndMedia, AnIdleResumableUploadExpiresWithItsBytes) {
  ASSERT_NO_FATAL_FAILURE(start({"--upload-expiry-ms", "400", "--sweep-interval-ms", "100"}));
  auto created = raw_http(port(), "POST", "/v1/media/uploads", auth(alice), R"({"size":50000})");
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string target = "/v1/media/uploads/" + jstr(created.obj(), "upload_id");
  auto h = auth(alice);
  h["Content-Range"] = "bytes 0-19999/50000";
  ASSERT_EQ(raw_http(port(), "PUT", target, h, random_bytes(20000)).status, 200);
  ASSERT_EQ(count_files(media_dir() + "/uploads"), 2u);  // the partial (its size, its bytes), resumable for now
  ASSERT_TRUE(eventually([&] { return raw_http(port(), "GET", target, auth(alice), {}).status == 404; }));
  EXPECT_EQ(count_files(media_dir()), 0u);
}

TEST_F(TerndMedia, GarbageCollection) {
  ASSERT_NO_FATAL_FAILURE(start({"--media-grace-ms", "1500", "--sweep-interval-ms", "100"}));
  Device da(alice);
  ASSERT_TRUE(da.connect_synced(port()));
  const std::string never_sent = must_upload(alice, random_bytes(1000));
  const std::string expiring = must_upload(alice, random_bytes(1100));
  const std::string kept = must_upload(alice, random_bytes(1200));
  auto e = send_media(da, direct, "e-1", {expiring}, 1);
  ASSERT_TRUE(e);
  ASSERT_EQ(type_of(*e), "sent") << dump(*e);
  auto k = send_media(da, direct, "k-1", {kept});
  ASSERT_TRUE(k);
  ASSERT_EQ(type_of(*k), "sent") << dump(*k);
  ASSERT_EQ(count_files(media_dir() + "/blobs"), 3u);

  // Within the grace period everything stays.
  EXPECT_EQ(download(port(), alice.token, never_sent).status, 200);
  // After it: the never-sent blob and the one whose only message expired are gone from disk;
  // the one a live message names stays.
  ASSERT_TRUE(eventually([&] { return count_files(media_dir() + "/blobs") == 1; }, ms(20000)))
      << count_files(media_dir() + "/blobs");
  EXPECT_EQ(download(port(), alice.token, never_sent).status, 404);
  EXPECT_EQ(download(port(), alice.token, expiring).status, 404);
  EXPECT_EQ(download(port(), bob.token, expiring).status, 404);
  EXPECT_EQ(download(port(), bob.token, kept).status, 200);
  EXPECT_TRUE(std::filesystem::exists(media_dir() + "/blobs/" + kept.substr(0, 2) + "/" + kept));
}

TEST_F(TerndMedia, PlaintextCanaryOfAnAttachmentIsNowhereOnTheServer) {
  ASSERT_NO_FATAL_FAILURE(start());
  const std::string canary = "CANARY-plaintext-Zx81Qw";
  std::string file = random_bytes(5000) + canary + random_bytes(5000);
  auto enc = client::encrypt_attachment(file);
  ASSERT_TRUE(enc.ok());
  const std::string id = must_upload(alice, enc->blob);
  EXPECT_EQ(id, enc->digest_hex);
  Device da(alice), db(bob);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(db.connect_synced(port()));
  // The body carries the key (here in the clear base64 wire-v1 body: the canary is in the file only).
  auto sent = send_media(da, direct, "c-1", {id});
  ASSERT_TRUE(sent);
  ASSERT_EQ(type_of(*sent), "sent");
  auto got = download(port(), bob.token, id);
  ASSERT_EQ(got.status, 200);
  auto plain = client::decrypt_attachment(got.body, enc->key);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(*plain, file);
  ASSERT_TRUE(server_->terminate() == 0);
  const std::string root = std::filesystem::path(server_->data_dir()).parent_path().string();
  EXPECT_TRUE(files_containing(root, canary).empty());
  EXPECT_TRUE(files_containing(server_->disk_dirs(), canary).empty());  // and Redis's AOF, on --store redis
  EXPECT_FALSE(files_containing(root, enc->blob.substr(100, 64)).empty());  // the ciphertext is there
}

}  // namespace
}  // namespace tern::test
