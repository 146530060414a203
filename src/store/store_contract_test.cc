// The store contract suite (see store_contract_test.h). Everything goes through Store.
#include "store/store_contract_test.h"

#include <algorithm>
#include <limits>
#include <map>
#include <set>

namespace tern::store::contract {

namespace {

std::string frame_for(const std::string& conv, Seq seq) {
  return "{\"type\":\"message\",\"conversation_id\":\"" + conv + "\",\"seq\":" + std::to_string(seq) + "}";
}

Member member(std::string user, Seq joined, Seq left = 0, bool admin = false) {
  return Member{std::move(user), joined, left, admin};
}

Conversation group(std::string id, std::vector<Member> members) {
  Conversation c;
  c.id = std::move(id);
  c.type = ConvType::kGroup;
  c.name = "the group";
  c.created_ts = 1700000000000;
  c.members = std::move(members);
  return c;
}

void expect_same(const Conversation& a, const Conversation& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.created_ts, b.created_ts);
  EXPECT_EQ(a.fanout_on_read, b.fanout_on_read);
  EXPECT_EQ(a.is_public, b.is_public);
  EXPECT_EQ(a.subscribers, b.subscribers);
  ASSERT_EQ(a.members.size(), b.members.size());
  for (size_t i = 0; i < a.members.size(); ++i) {
    EXPECT_EQ(a.members[i].user, b.members[i].user) << i;
    EXPECT_EQ(a.members[i].joined_seq, b.members[i].joined_seq) << i;
    EXPECT_EQ(a.members[i].left_seq, b.members[i].left_seq) << i;
    EXPECT_EQ(a.members[i].admin, b.members[i].admin) << i;
  }
}

std::map<std::string, std::pair<Seq, Seq>> index_of(Store& s, const std::string& user) {
  std::map<std::string, std::pair<Seq, Seq>> out;
  for (const UserConversation& uc : must(s.user_conversations(user))) {
    EXPECT_FALSE(out.count(uc.conversation_id)) << "duplicate index row " << uc.conversation_id;
    out[uc.conversation_id] = {uc.joined_seq, uc.left_seq};
  }
  return out;
}

std::map<std::string, Seq> inbox_of(Store& s, const DeviceRef& d) {
  std::map<std::string, Seq> out;
  for (auto& [conv, seq] : must(s.inbox(d))) {
    EXPECT_FALSE(out.count(conv)) << "duplicate inbox row " << conv;
    out[conv] = seq;
  }
  return out;
}

std::map<std::string, std::pair<Seq, Seq>> receipts_of(Store& s, const std::string& conv) {
  std::map<std::string, std::pair<Seq, Seq>> out;
  for (const ReceiptState& r : must(s.receipts(conv))) {
    EXPECT_FALSE(out.count(r.user)) << "duplicate receipt row " << r.user;
    out[r.user] = {r.delivered, r.read};
  }
  return out;
}

std::vector<Seq> seqs_of(const std::vector<StoredMessage>& msgs) {
  std::vector<Seq> out;
  for (const auto& m : msgs) out.push_back(m.seq);
  return out;
}

IdempotencyRecord idem(std::string conv, Seq seq, int64_t ts, int64_t expires_at) {
  return IdempotencyRecord{std::move(conv), seq, ts, expires_at};
}

const DeviceRef kAlice1{"alice", 1};
const DeviceRef kAlice2{"alice", 2};
const DeviceRef kBob1{"bob", 1};

}  // namespace

void StoreContractTest::SetUp() {
  harness_ = GetParam().make();
  ASSERT_TRUE(harness_);
  auto opened = harness_->open();
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  store_ = std::move(opened).value();
}

void StoreContractTest::TearDown() {
  store_.reset();
  harness_.reset();
}

void StoreContractTest::reopen() {
  store_.reset();
  auto opened = harness_->open();
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  store_ = std::move(opened).value();
}

void StoreContractTest::commit1(Op op, bool sync) {
  Batch b;
  b.add(std::move(op));
  commit(std::move(b), sync);
}

void StoreContractTest::commit(Batch batch, bool sync) {
  auto r = store_->commit(batch, sync);
  ASSERT_TRUE(r.ok()) << r.error().message;
}

// ---- accounts ----

TEST_P(StoreContractTest, UsersExistOnceCreated) {
  EXPECT_FALSE(must(store().user_exists("alice")));
  commit1(PutUser{"alice", 1000});
  EXPECT_TRUE(must(store().user_exists("alice")));
  EXPECT_FALSE(must(store().user_exists("alic")));
  EXPECT_FALSE(must(store().user_exists("alice2")));
  EXPECT_FALSE(must(store().user_exists("")));
}

TEST_P(StoreContractTest, DevicesAreListedInIncreasingOrder) {
  EXPECT_TRUE(must(store().devices("alice")).empty());
  commit1(PutUser{"alice", 1});
  Batch b;
  b.add(PutDevice{{"alice", 3}, "h3"});
  b.add(PutDevice{{"alice", 1}, "h1"});
  b.add(PutDevice{{"alice", 256}, "h256"});
  b.add(PutDevice{{"alice", 2}, "h2"});
  b.add(PutDevice{{"alicea", 9}, "h9"});  // a user whose id extends alice's
  commit(std::move(b));
  EXPECT_EQ(must(store().devices("alice")), (std::vector<uint32_t>{1, 2, 3, 256}));
  EXPECT_EQ(must(store().devices("alicea")), (std::vector<uint32_t>{9}));
  EXPECT_TRUE(must(store().devices("bob")).empty());
}

// devices_of: each user's devices() in the order asked (a store over the network answers
// them in one round trip; on a Cluster the users' keys are on several slots).
TEST_P(StoreContractTest, DevicesOfSeveralUsersAnswerEachInTheOrderAsked) {
  EXPECT_TRUE(must(store().devices_of({})).empty());
  Batch b;
  b.add(PutDevice{{"alice", 2}, "ha2"});
  b.add(PutDevice{{"alice", 1}, "ha1"});
  b.add(PutDevice{{"bob", 7}, "hb7"});
  commit(std::move(b));
  std::vector<std::string> users{"bob", "nobody", "alice", "bob"};
  for (int i = 0; i < 20; ++i) users.push_back("u" + std::to_string(i));  // many slots on a Cluster
  auto got = must(store().devices_of(users));
  ASSERT_EQ(got.size(), users.size());
  EXPECT_EQ(got[0], (std::vector<uint32_t>{7}));
  EXPECT_TRUE(got[1].empty()) << "no such user";
  EXPECT_EQ(got[2], (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(got[3], (std::vector<uint32_t>{7}));
  for (size_t i = 4; i < got.size(); ++i) EXPECT_TRUE(got[i].empty()) << users[i];
}

// A device that must be new (a registration, a link) refuses the whole batch if it is stored
// already: the earlier token keeps its device, nothing of the batch is written.
TEST_P(StoreContractTest, ADeviceThatMustBeNewRefusesTheBatchIfItIsThere) {
  Batch first;
  first.add(PutUser{"alice", 1});
  first.add(PutDevice{{"alice", 2}, "tok-first", /*must_be_new=*/true});
  commit(std::move(first));
  Batch second;
  second.add(PutDevice{{"alice", 2}, "tok-second", /*must_be_new=*/true});
  second.add(InboxMark{{"alice", 2}, "c1", 3});
  auto r = store().commit(second, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kExists);
  EXPECT_EQ(must(store().find_token("tok-first")), std::optional<DeviceRef>(DeviceRef{"alice", 2}));
  EXPECT_FALSE(must(store().find_token("tok-second")));
  EXPECT_TRUE(must(store().inbox({"alice", 2})).empty()) << "nothing of the refused batch is written";
  // Another number is new: accepted.
  Batch third;
  third.add(PutDevice{{"alice", 3}, "tok-third", /*must_be_new=*/true});
  commit(std::move(third));
  EXPECT_EQ(must(store().devices("alice")), (std::vector<uint32_t>{2, 3}));
}

// PutConversation::expected: a channel's change computed from a record that is no longer the
// stored one (another node changed the channel first) refuses its whole batch.
TEST_P(StoreContractTest, AConversationChangeFromARecordNoLongerStoredRefusesTheBatch) {
  Conversation v1;
  v1.id = "ch1";
  v1.type = ConvType::kChannel;
  v1.name = "news";
  v1.members = {Member{"alice", 1, 0, true}};
  v1.fanout_on_read = true;
  v1.is_public = true;
  v1.subscribers = 1;
  commit1(PutConversation{v1});
  Conversation v2 = v1;
  v2.subscribers = 2;
  commit1(PutConversation{v2, v1});  // from the stored record: written
  Conversation stale = v1;           // another change, still from v1
  stale.subscribers = 2;
  stale.members.push_back(Member{"bob", 1, 0, true});
  Batch b;
  b.add(PutConversation{stale, v1});
  b.add(PutSubscription{"carol", UserConversation{"ch1", 1, 0, true}});
  auto r = store().commit(b, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kExists) << r.error().message;
  EXPECT_EQ(must(store().conversation("ch1")), std::optional<Conversation>(v2));
  EXPECT_FALSE(must(store().user_conversation("carol", "ch1"))) << "nothing of the refused batch is written";
  EXPECT_FALSE(must(store().user_conversation("bob", "ch1")));
  // Two changes in one batch: the second counts from the first's record.
  Conversation v3 = v2;
  v3.subscribers = 3;
  Conversation v4 = v3;
  v4.members.push_back(Member{"bob", 1, 0, true});
  Batch two;
  two.add(PutConversation{v3, v2});
  two.add(PutConversation{v4, v3});
  commit(std::move(two));
  EXPECT_EQ(must(store().conversation("ch1")), std::optional<Conversation>(v4));
  EXPECT_TRUE(must(store().user_conversation("bob", "ch1")));
  // A record that is not stored matches nothing.
  Conversation other = v1;
  other.id = "ch2";
  auto none = store().commit(Batch{{PutConversation{other, other}}}, true);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ErrorCode::kExists);
  EXPECT_FALSE(must(store().conversation("ch2")));
}

TEST_P(StoreContractTest, TokensFindTheirDevice) {
  commit1(PutDevice{kAlice1, "hash-a1"});
  commit1(PutDevice{kAlice2, "hash-a2"});
  commit1(PutDevice{kBob1, std::string("bin\0\xff\x01", 6)});
  EXPECT_EQ(must(store().find_token("hash-a1")), std::optional<DeviceRef>(kAlice1));
  EXPECT_EQ(must(store().find_token("hash-a2")), std::optional<DeviceRef>(kAlice2));
  EXPECT_EQ(must(store().find_token(std::string("bin\0\xff\x01", 6))), std::optional<DeviceRef>(kBob1));
  EXPECT_EQ(must(store().find_token("hash-a")), std::nullopt);
  EXPECT_EQ(must(store().find_token("")), std::nullopt);
}

TEST_P(StoreContractTest, NewTokenForADeviceRevokesTheOldOne) {
  commit1(PutDevice{kAlice1, "old"});
  commit1(PutDevice{kAlice1, "new"});
  EXPECT_EQ(must(store().find_token("old")), std::nullopt);
  EXPECT_EQ(must(store().find_token("new")), std::optional<DeviceRef>(kAlice1));
  EXPECT_EQ(must(store().devices("alice")), (std::vector<uint32_t>{1}));
  // Same token again: still valid.
  commit1(PutDevice{kAlice1, "new"});
  EXPECT_EQ(must(store().find_token("new")), std::optional<DeviceRef>(kAlice1));
}

TEST_P(StoreContractTest, LastSeenIsZeroUntilSetThenLatestValue) {
  EXPECT_EQ(must(store().last_seen("alice")), 0);
  commit1(SetLastSeen{"alice", 1700000000123});
  EXPECT_EQ(must(store().last_seen("alice")), 1700000000123);
  commit1(SetLastSeen{"alice", 1700000000456});
  EXPECT_EQ(must(store().last_seen("alice")), 1700000000456);
  EXPECT_EQ(must(store().last_seen("bob")), 0);
}

// ---- conversations and the user index ----

TEST_P(StoreContractTest, ConversationRoundTripsEveryField) {
  EXPECT_EQ(must(store().conversation("g1")), std::nullopt);
  Conversation c = group("g1", {member("alice", 1, 0, true), member("bob", 2), member("carol", 3, 9)});
  commit1(PutConversation{c});
  auto got = must(store().conversation("g1"));
  ASSERT_TRUE(got);
  expect_same(*got, c);

  Conversation d;
  d.id = "d:alice:bob";
  d.type = ConvType::kDirect;
  d.created_ts = -5;  // nonsense, but stored as given
  d.members = {member("alice", 1), member("bob", 1)};
  commit1(PutConversation{d});
  got = must(store().conversation("d:alice:bob"));
  ASSERT_TRUE(got);
  expect_same(*got, d);
  EXPECT_EQ(must(store().conversation("g")), std::nullopt);
}

TEST_P(StoreContractTest, UserIndexFollowsMembership) {
  commit1(PutConversation{group("g1", {member("alice", 1, 0, true), member("bob", 1)})});
  commit1(PutConversation{group("g2", {member("alice", 1, 0, true)})});
  EXPECT_EQ(index_of(store(), "alice"), (std::map<std::string, std::pair<Seq, Seq>>{{"g1", {1, 0}}, {"g2", {1, 0}}}));
  EXPECT_EQ(index_of(store(), "bob"), (std::map<std::string, std::pair<Seq, Seq>>{{"g1", {1, 0}}}));
  EXPECT_TRUE(index_of(store(), "carol").empty());

  // carol joins with seq 5, bob leaves with seq 7.
  commit1(PutConversation{group("g1", {member("alice", 1, 0, true), member("bob", 1, 7), member("carol", 5)})});
  EXPECT_EQ(index_of(store(), "bob"), (std::map<std::string, std::pair<Seq, Seq>>{{"g1", {1, 7}}}));
  EXPECT_EQ(index_of(store(), "carol"), (std::map<std::string, std::pair<Seq, Seq>>{{"g1", {5, 0}}}));
  EXPECT_EQ(index_of(store(), "alice").size(), 2u);

  // bob re-joins at seq 9: the row is replaced, not duplicated.
  commit1(PutConversation{group("g1", {member("alice", 1, 0, true), member("bob", 9), member("carol", 5)})});
  EXPECT_EQ(index_of(store(), "bob"), (std::map<std::string, std::pair<Seq, Seq>>{{"g1", {9, 0}}}));
}

TEST_P(StoreContractTest, ChannelFlagsAndSubscriberCountRoundTrip) {
  Conversation ch = group("ch1", {member("alice", 1, 0, true)});
  ch.type = ConvType::kChannel;
  ch.name = "news";
  ch.fanout_on_read = true;
  ch.is_public = true;
  ch.subscribers = 200000;
  commit1(PutConversation{ch});
  auto got = must(store().conversation("ch1"));
  ASSERT_TRUE(got);
  expect_same(*got, ch);
  EXPECT_EQ(got->type, ConvType::kChannel);
  EXPECT_TRUE(got->fanout_on_read);
  EXPECT_TRUE(got->is_public);
  EXPECT_EQ(got->subscribers, 200000u);
  // The listed admin's index row carries the fan-out-on-read flag.
  auto row = must(store().user_conversation("alice", "ch1"));
  ASSERT_TRUE(row);
  EXPECT_TRUE(row->fanout_on_read);
  EXPECT_EQ(row->joined_seq, 1u);
}

TEST_P(StoreContractTest, SubscriptionRowsArePutAndDeletedBlind) {
  EXPECT_EQ(must(store().user_conversation("bob", "ch1")), std::nullopt);
  commit1(PutSubscription{"bob", UserConversation{"ch1", 8, 0, true}});
  auto row = must(store().user_conversation("bob", "ch1"));
  ASSERT_TRUE(row);
  EXPECT_EQ(row->conversation_id, "ch1");
  EXPECT_EQ(row->joined_seq, 8u);
  EXPECT_EQ(row->left_seq, 0u);
  EXPECT_TRUE(row->fanout_on_read);
  auto rows = must(store().user_conversations("bob"));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_TRUE(rows[0].fanout_on_read);
  // A group row written through PutConversation has the flag off unless the group has it.
  commit1(PutConversation{group("g1", {member("bob", 1, 0, true)})});
  row = must(store().user_conversation("bob", "g1"));
  ASSERT_TRUE(row);
  EXPECT_FALSE(row->fanout_on_read);
  commit1(DeleteSubscription{"bob", "ch1"});
  EXPECT_EQ(must(store().user_conversation("bob", "ch1")), std::nullopt);
  EXPECT_EQ(must(store().user_conversations("bob")).size(), 1u);
}

TEST_P(StoreContractTest, MemberDroppedFromTheListLosesItsIndexRow) {
  commit1(PutConversation{group("g1", {member("alice", 1, 0, true), member("bob", 1)})});
  commit1(PutConversation{group("g1", {member("alice", 1, 0, true)})});
  EXPECT_TRUE(index_of(store(), "bob").empty());
  EXPECT_EQ(index_of(store(), "alice").size(), 1u);
}

// ---- message log ----

TEST_P(StoreContractTest, AppendedMessagesReadBackInSeqOrderWithPaging) {
  Batch b;
  for (Seq s = 10; s >= 1; --s) b.add(AppendMessage{"c1", s, frame_for("c1", s)});  // any op order
  commit(std::move(b));

  auto all = must(store().read_messages("c1", 0, 100));
  EXPECT_EQ(seqs_of(all), (std::vector<Seq>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  for (const auto& m : all) EXPECT_EQ(m.frame, frame_for("c1", m.seq));

  EXPECT_EQ(seqs_of(must(store().read_messages("c1", 3, 4))), (std::vector<Seq>{4, 5, 6, 7}));
  EXPECT_EQ(seqs_of(must(store().read_messages("c1", 7, 4))), (std::vector<Seq>{8, 9, 10}));
  EXPECT_TRUE(must(store().read_messages("c1", 10, 4)).empty());
  EXPECT_TRUE(must(store().read_messages("c1", 0, 0)).empty());
  EXPECT_TRUE(must(store().read_messages("c1", std::numeric_limits<Seq>::max(), 10)).empty());
  EXPECT_TRUE(must(store().read_messages("nope", 0, 10)).empty());

  // Paging through the whole log visits every seq once.
  std::vector<Seq> paged;
  Seq after = 0;
  for (int guard = 0; guard < 20; ++guard) {
    auto page = must(store().read_messages("c1", after, 3));
    if (page.empty()) break;
    for (const auto& m : page) paged.push_back(m.seq);
    after = page.back().seq;
  }
  EXPECT_EQ(paged, seqs_of(all));
}

TEST_P(StoreContractTest, HeadIsTheLastSeq) {
  EXPECT_EQ(must(store().head("c1")), 0u);
  commit1(AppendMessage{"c1", 1, "a"});
  EXPECT_EQ(must(store().head("c1")), 1u);
  Batch b;
  for (Seq s = 2; s <= 300; ++s) b.add(AppendMessage{"c1", s, "x"});  // crosses a byte boundary
  commit(std::move(b));
  EXPECT_EQ(must(store().head("c1")), 300u);
  EXPECT_EQ(seqs_of(must(store().read_messages("c1", 254, 4))), (std::vector<Seq>{255, 256, 257, 258}));
}

TEST_P(StoreContractTest, ConversationsWithPrefixIdsDoNotMix) {
  // "c" is a prefix of "c1" and "c\x01": each log must read only its own rows.
  Batch b;
  b.add(AppendMessage{"c", 1, "c-1"});
  b.add(AppendMessage{"c", 2, "c-2"});
  b.add(AppendMessage{"c1", 1, "c1-1"});
  b.add(AppendMessage{"c1", 2, "c1-2"});
  b.add(AppendMessage{"c1", 3, "c1-3"});
  b.add(AppendMessage{std::string("c\x01"), 9, "c01-9"});
  b.add(AppendMessage{"b", 5, "b-5"});
  commit(std::move(b));
  EXPECT_EQ(seqs_of(must(store().read_messages("c", 0, 100))), (std::vector<Seq>{1, 2}));
  EXPECT_EQ(seqs_of(must(store().read_messages("c1", 0, 100))), (std::vector<Seq>{1, 2, 3}));
  EXPECT_EQ(seqs_of(must(store().read_messages(std::string("c\x01"), 0, 100))), (std::vector<Seq>{9}));
  EXPECT_EQ(must(store().head("c")), 2u);
  EXPECT_EQ(must(store().head("c1")), 3u);
  EXPECT_EQ(must(store().head(std::string("c\x01"))), 9u);
  EXPECT_EQ(must(store().head("b")), 5u);
  EXPECT_EQ(must(store().head("a")), 0u);
  EXPECT_EQ(must(store().head("d")), 0u);
  EXPECT_EQ(must(store().head("c0")), 0u);
}

TEST_P(StoreContractTest, FramesAreStoredByteExact) {
  std::string binary("\0\x01\xff{\"x\":\"\xc3\xa9\"}\0", 15);
  std::string big(200 * 1024, 'z');
  Batch b;
  b.add(AppendMessage{"c1", 1, binary});
  b.add(AppendMessage{"c1", 2, big});
  b.add(AppendMessage{"c1", 3, ""});
  commit(std::move(b));
  auto msgs = must(store().read_messages("c1", 0, 10));
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(msgs[0].frame, binary);
  EXPECT_EQ(msgs[1].frame, big);
  EXPECT_EQ(msgs[2].frame, "");
}

TEST_P(StoreContractTest, LargeSeqsSortNumerically) {
  const Seq big = Seq{1} << 40;
  Batch b;
  b.add(AppendMessage{"c1", big, "big"});
  b.add(AppendMessage{"c1", 255, "255"});
  b.add(AppendMessage{"c1", 65536, "65536"});
  commit(std::move(b));
  EXPECT_EQ(seqs_of(must(store().read_messages("c1", 0, 10))), (std::vector<Seq>{255, 65536, big}));
  EXPECT_EQ(must(store().head("c1")), big);
}

// conversations_of: each conversation() in the order asked, absent ones too (one round trip
// over the network; on a Cluster the conversations are on several slots).
TEST_P(StoreContractTest, ConversationsOfSeveralIdsAnswerEachInTheOrderAsked) {
  EXPECT_TRUE(must(store().conversations_of({})).empty());
  Conversation g = group("g1", {member("alice", 1, 0, true), member("bob", 2)});
  Conversation h = group("g2", {member("carol", 4, 0, true)});
  commit1(PutConversation{g});
  commit1(PutConversation{h});
  std::vector<std::string> ids{"g2", "nope", "g1", "g2"};
  for (int i = 0; i < 20; ++i) ids.push_back("x" + std::to_string(i));  // many slots on a Cluster
  auto got = must(store().conversations_of(ids));
  ASSERT_EQ(got.size(), ids.size());
  ASSERT_TRUE(got[0]);
  expect_same(*got[0], h);
  EXPECT_FALSE(got[1]) << "no such conversation";
  ASSERT_TRUE(got[2]);
  expect_same(*got[2], g);
  ASSERT_TRUE(got[3]);
  expect_same(*got[3], h);
  for (size_t i = 4; i < got.size(); ++i) EXPECT_FALSE(got[i]) << ids[i];
}

// ---- per-device state ----

TEST_P(StoreContractTest, CursorIsABlindPut) {
  EXPECT_EQ(must(store().cursor(kAlice1, "c1")), 0u);
  commit1(SetCursor{kAlice1, "c1", 5});
  EXPECT_EQ(must(store().cursor(kAlice1, "c1")), 5u);
  commit1(SetCursor{kAlice1, "c1", 9});
  EXPECT_EQ(must(store().cursor(kAlice1, "c1")), 9u);
  // Blind: the owning loop keeps it growing; the store writes what it is given.
  commit1(SetCursor{kAlice1, "c1", 3});
  EXPECT_EQ(must(store().cursor(kAlice1, "c1")), 3u);
  // Independent per device and per conversation.
  EXPECT_EQ(must(store().cursor(kAlice2, "c1")), 0u);
  EXPECT_EQ(must(store().cursor(kAlice1, "c2")), 0u);
  EXPECT_EQ(must(store().cursor(kAlice1, "c")), 0u);
  EXPECT_EQ(must(store().cursor(kBob1, "c1")), 0u);
}

// cursors: the device's cursor() in each conversation asked, in that order, 0 where it has
// none; another device's cursors do not answer.
TEST_P(StoreContractTest, CursorsOfSeveralConversationsAnswerEachInTheOrderAsked) {
  EXPECT_TRUE(must(store().cursors(kAlice1, {})).empty());
  Batch b;
  b.add(SetCursor{kAlice1, "c1", 5});
  b.add(SetCursor{kAlice1, "c3", 12});
  b.add(SetCursor{kAlice2, "c2", 7});
  b.add(SetCursor{kBob1, "c1", 99});
  commit(std::move(b));
  EXPECT_EQ(must(store().cursors(kAlice1, {"c3", "c2", "c1", "c", "c3"})), (std::vector<Seq>{12, 0, 5, 0, 12}));
  EXPECT_EQ(must(store().cursors(kAlice2, {"c1", "c2"})), (std::vector<Seq>{0, 7}));
  EXPECT_EQ(must(store().cursors(kBob1, {"c1"})), (std::vector<Seq>{99}));
  reopen();
  EXPECT_EQ(must(store().cursors(kAlice1, {"c1", "c3"})), (std::vector<Seq>{5, 12}));
}

TEST_P(StoreContractTest, ReceiptsAreBlindPutsPerUser) {
  EXPECT_TRUE(must(store().receipts("c1")).empty());
  commit1(SetReceipt{"c1", "bob", 5, 0});
  EXPECT_EQ(receipts_of(store(), "c1"), (std::map<std::string, std::pair<Seq, Seq>>{{"bob", {5, 0}}}));
  commit1(SetReceipt{"c1", "bob", 5, 4});
  EXPECT_EQ(receipts_of(store(), "c1"), (std::map<std::string, std::pair<Seq, Seq>>{{"bob", {5, 4}}}));
  commit1(SetReceipt{"c1", "carol", 8, 8});
  commit1(SetReceipt{"c10", "dave", 1, 1});
  EXPECT_EQ(receipts_of(store(), "c1"),
            (std::map<std::string, std::pair<Seq, Seq>>{{"bob", {5, 4}}, {"carol", {8, 8}}}));
  EXPECT_EQ(receipts_of(store(), "c10"), (std::map<std::string, std::pair<Seq, Seq>>{{"dave", {1, 1}}}));
}

// receipts_of: each conversation's receipts(), in the order asked, empty where there are none
// (one round trip over the network; on a Cluster the conversations are on several slots).
TEST_P(StoreContractTest, ReceiptsOfSeveralConversationsAnswerEachInTheOrderAsked) {
  EXPECT_TRUE(must(store().receipts_of({})).empty());
  Batch b;
  b.add(SetReceipt{"c1", "carol", 8, 8});
  b.add(SetReceipt{"c1", "bob", 5, 4});
  b.add(SetReceipt{"c2", "dave", 1, 0});
  commit(std::move(b));
  std::vector<std::string> ids{"c2", "none", "c1", "c2"};
  for (int i = 0; i < 20; ++i) ids.push_back("x" + std::to_string(i));  // many slots on a Cluster
  auto got = must(store().receipts_of(ids));
  ASSERT_EQ(got.size(), ids.size());
  auto as_map = [](const std::vector<ReceiptState>& rs) {
    std::map<std::string, std::pair<Seq, Seq>> m;
    for (const auto& r : rs) m[r.user] = {r.delivered, r.read};
    return m;
  };
  EXPECT_EQ(as_map(got[0]), (std::map<std::string, std::pair<Seq, Seq>>{{"dave", {1, 0}}}));
  EXPECT_TRUE(got[1].empty());
  EXPECT_EQ(as_map(got[2]), (std::map<std::string, std::pair<Seq, Seq>>{{"bob", {5, 4}}, {"carol", {8, 8}}}));
  auto users = [](const std::vector<ReceiptState>& rs) {
    std::vector<std::string> u;
    for (const auto& r : rs) u.push_back(r.user);
    return u;
  };
  EXPECT_EQ(users(got[2]), users(must(store().receipts("c1")))) << "the same order as receipts()";
  EXPECT_EQ(as_map(got[3]), as_map(got[0]));
  for (size_t i = 4; i < got.size(); ++i) EXPECT_TRUE(got[i].empty()) << ids[i];
}

TEST_P(StoreContractTest, InboxMarkPutsAndDeleteRemoves) {
  EXPECT_TRUE(must(store().inbox(kBob1)).empty());
  commit1(InboxMark{kBob1, "c1", 3});
  commit1(InboxMark{kBob1, "c1", 5});
  commit1(InboxMark{kBob1, "c2", 7});
  EXPECT_EQ(inbox_of(store(), kBob1), (std::map<std::string, Seq>{{"c1", 5}, {"c2", 7}}));

  commit1(InboxDelete{kBob1, "c1"});
  EXPECT_EQ(inbox_of(store(), kBob1), (std::map<std::string, Seq>{{"c2", 7}}));
  commit1(InboxDelete{kBob1, "c2"});
  EXPECT_TRUE(must(store().inbox(kBob1)).empty());
  commit1(InboxDelete{kBob1, "never"});  // deleting nothing is fine
  EXPECT_TRUE(must(store().inbox(kBob1)).empty());

  // A mark after a delete brings the conversation back.
  commit1(InboxMark{kBob1, "c1", 6});
  EXPECT_EQ(inbox_of(store(), kBob1), (std::map<std::string, Seq>{{"c1", 6}}));
}

// ---- batches ----

TEST_P(StoreContractTest, EmptyBatchCommits) {
  commit(Batch{}, true);
  commit(Batch{}, false);
}

TEST_P(StoreContractTest, SameKeyOpsWithinOneBatchApplyInOrder) {
  Batch b;
  b.add(SetCursor{kAlice1, "c1", 5});
  b.add(SetCursor{kAlice1, "c1", 7});
  b.add(SetCursor{kAlice1, "c1", 6});  // last wins
  b.add(SetReceipt{"c1", "bob", 5, 0});
  b.add(SetReceipt{"c1", "bob", 5, 6});
  b.add(InboxMark{kBob1, "c1", 3});
  b.add(InboxMark{kBob1, "c1", 5});
  b.add(InboxMark{kBob1, "c2", 3});
  b.add(InboxDelete{kBob1, "c2"});  // deleted...
  b.add(InboxMark{kBob1, "c2", 4});  // ...then marked again
  b.add(InboxMark{kBob1, "c3", 9});
  b.add(InboxDelete{kBob1, "c3"});
  commit(std::move(b));
  EXPECT_EQ(must(store().cursor(kAlice1, "c1")), 6u);
  EXPECT_EQ(receipts_of(store(), "c1"), (std::map<std::string, std::pair<Seq, Seq>>{{"bob", {5, 6}}}));
  EXPECT_EQ(inbox_of(store(), kBob1), (std::map<std::string, Seq>{{"c1", 5}, {"c2", 4}}));

  // A later batch overwrites what is stored.
  Batch b2;
  b2.add(SetCursor{kAlice1, "c1", 8});
  b2.add(InboxDelete{kBob1, "c1"});
  b2.add(SetReceipt{"c1", "bob", 9, 7});
  commit(std::move(b2));
  EXPECT_EQ(must(store().cursor(kAlice1, "c1")), 8u);
  EXPECT_EQ(inbox_of(store(), kBob1), (std::map<std::string, Seq>{{"c2", 4}}));
  EXPECT_EQ(receipts_of(store(), "c1"), (std::map<std::string, std::pair<Seq, Seq>>{{"bob", {9, 7}}}));
}

TEST_P(StoreContractTest, SameConversationTwiceInOneBatchLastWins) {
  commit1(PutConversation{group("g1", {member("alice", 1, 0, true), member("bob", 1)})});
  Batch b;
  b.add(PutConversation{group("g1", {member("alice", 1, 0, true), member("carol", 2)})});
  b.add(PutConversation{group("g1", {member("alice", 1, 0, true), member("dave", 3)})});
  commit(std::move(b));
  auto c = must(store().conversation("g1"));
  ASSERT_TRUE(c);
  ASSERT_EQ(c->members.size(), 2u);
  EXPECT_EQ(c->members[1].user, "dave");
  EXPECT_TRUE(index_of(store(), "bob").empty());
  EXPECT_TRUE(index_of(store(), "carol").empty());
  EXPECT_EQ(index_of(store(), "dave"), (std::map<std::string, std::pair<Seq, Seq>>{{"g1", {3, 0}}}));
}

TEST_P(StoreContractTest, SameDeviceTwiceInOneBatchKeepsOnlyTheLastToken) {
  commit1(PutDevice{kAlice1, "t0"});
  Batch b;
  b.add(PutDevice{kAlice1, "t1"});
  b.add(PutDevice{kAlice1, "t2"});
  commit(std::move(b));
  EXPECT_EQ(must(store().find_token("t0")), std::nullopt);
  EXPECT_EQ(must(store().find_token("t1")), std::nullopt);
  EXPECT_EQ(must(store().find_token("t2")), std::optional<DeviceRef>(kAlice1));
}

TEST_P(StoreContractTest, CommittedBatchIsFullyVisible) {
  Batch b;
  b.add(PutUser{"alice", 1});
  b.add(PutDevice{kAlice1, "tok"});
  b.add(PutConversation{group("g1", {member("alice", 1, 0, true), member("bob", 1)})});
  for (Seq s = 1; s <= 50; ++s) {
    b.add(AppendMessage{"g1", s, frame_for("g1", s)});
    b.add(PutIdempotency{kAlice1, "m" + std::to_string(s), idem("g1", s, 10, 1000000)});
    b.add(InboxMark{kBob1, "g1", s});
  }
  b.add(SetCursor{kBob1, "g1", 40});
  b.add(SetReceipt{"g1", "bob", 40, 30});
  b.add(InboxDelete{kAlice1, "g1"});
  b.add(SetLastSeen{"bob", 77});
  commit(std::move(b), /*sync=*/true);

  EXPECT_TRUE(must(store().user_exists("alice")));
  EXPECT_EQ(must(store().find_token("tok")), std::optional<DeviceRef>(kAlice1));
  EXPECT_TRUE(must(store().conversation("g1")));
  EXPECT_EQ(must(store().head("g1")), 50u);
  EXPECT_EQ(must(store().read_messages("g1", 0, 1000)).size(), 50u);
  for (Seq s = 1; s <= 50; ++s) {
    auto r = must(store().idempotency(kAlice1, "m" + std::to_string(s), 0));
    ASSERT_TRUE(r) << s;
    EXPECT_EQ(r->seq, s);
  }
  EXPECT_EQ(inbox_of(store(), kBob1), (std::map<std::string, Seq>{{"g1", 50}}));
  EXPECT_TRUE(inbox_of(store(), kAlice1).empty());
  EXPECT_EQ(must(store().cursor(kBob1, "g1")), 40u);
  EXPECT_EQ(receipts_of(store(), "g1"), (std::map<std::string, std::pair<Seq, Seq>>{{"bob", {40, 30}}}));
  EXPECT_EQ(must(store().last_seen("bob")), 77);
  EXPECT_EQ(index_of(store(), "bob").size(), 1u);
}

// ---- persistence ----

TEST_P(StoreContractTest, EverythingSurvivesReopen) {
  Batch b;
  b.add(PutUser{"alice", 1});
  b.add(PutUser{"bob", 2});
  b.add(PutDevice{kAlice1, "tok-a1"});
  b.add(PutDevice{kBob1, "tok-b1"});
  b.add(PutConversation{group("g1", {member("alice", 1, 0, true), member("bob", 1, 4)})});
  for (Seq s = 1; s <= 5; ++s) b.add(AppendMessage{"g1", s, frame_for("g1", s)});
  b.add(PutIdempotency{kAlice1, "m1", idem("g1", 1, 10, 1000)});
  b.add(SetCursor{kBob1, "g1", 3});
  b.add(SetReceipt{"g1", "bob", 3, 2});
  b.add(InboxMark{kBob1, "g1", 4});
  b.add(SetLastSeen{"alice", 99});
  commit(std::move(b), /*sync=*/false);  // durability across a clean close needs no sync
  commit1(AppendMessage{"g1", 6, frame_for("g1", 6)}, /*sync=*/true);

  reopen();
  reopen();  // twice: a reopened store closes cleanly too

  EXPECT_TRUE(must(store().user_exists("alice")));
  EXPECT_TRUE(must(store().user_exists("bob")));
  EXPECT_EQ(must(store().devices("alice")), (std::vector<uint32_t>{1}));
  EXPECT_EQ(must(store().find_token("tok-b1")), std::optional<DeviceRef>(kBob1));
  auto c = must(store().conversation("g1"));
  ASSERT_TRUE(c);
  expect_same(*c, group("g1", {member("alice", 1, 0, true), member("bob", 1, 4)}));
  EXPECT_EQ(index_of(store(), "bob"), (std::map<std::string, std::pair<Seq, Seq>>{{"g1", {1, 4}}}));
  EXPECT_EQ(must(store().head("g1")), 6u);
  auto msgs = must(store().read_messages("g1", 2, 10));
  EXPECT_EQ(seqs_of(msgs), (std::vector<Seq>{3, 4, 5, 6}));
  if (!msgs.empty()) {
    EXPECT_EQ(msgs.front().frame, frame_for("g1", 3));
  }
  auto r = must(store().idempotency(kAlice1, "m1", 500));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->seq, 1u);
  EXPECT_EQ(r->ts, 10);
  EXPECT_EQ(must(store().cursor(kBob1, "g1")), 3u);
  EXPECT_EQ(receipts_of(store(), "g1"), (std::map<std::string, std::pair<Seq, Seq>>{{"bob", {3, 2}}}));
  EXPECT_EQ(inbox_of(store(), kBob1), (std::map<std::string, Seq>{{"g1", 4}}));
  EXPECT_EQ(must(store().last_seen("alice")), 99);

  // Writes after the restart replace what was stored before it.
  commit1(SetCursor{kBob1, "g1", 5});
  EXPECT_EQ(must(store().cursor(kBob1, "g1")), 5u);
  // The expiry index survived too.
  EXPECT_EQ(must(store().purge_expired(2000)), 1u);
}

TEST_P(StoreContractTest, FlushThenReopen) {
  commit1(AppendMessage{"c1", 1, "x"});
  commit1(SetCursor{kAlice1, "c1", 1});
  auto f = store().flush();
  ASSERT_TRUE(f.ok()) << f.error().message;
  commit1(AppendMessage{"c1", 2, "y"});  // writes after a flush still land
  reopen();
  EXPECT_EQ(must(store().head("c1")), 2u);
  EXPECT_EQ(must(store().cursor(kAlice1, "c1")), 1u);
}


// ---- key directory ----
namespace {
DeviceKeys sample_keys(char fill) {
  DeviceKeys k;
  k.identity_key = std::string(1, '\x05') + std::string(32, fill);
  k.registration_id = 4711;
  k.signed_prekey = SignedPrekey{7, std::string(1, '\x05') + std::string(32, 's'), std::string(64, '\0')};
  return k;
}
}  // namespace

TEST_P(StoreContractTest, DeviceKeysRoundTripEveryField) {
  const DeviceRef d{"alice", 2};
  auto none = store().device_keys(d);
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
  DeviceKeys k = sample_keys('i');
  k.previous_signed_prekey = SignedPrekey{6, std::string(1, '\x05') + std::string(32, 'p'), std::string(64, 'q')};
  k.previous_replaced_at = -5;  // any int64 round-trips
  commit1(PutDeviceKeys{d, k});
  auto got = store().device_keys(d);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(**got, k);
  auto other = store().device_keys(DeviceRef{"alice", 1});
  ASSERT_TRUE(other);
  EXPECT_FALSE(*other) << "keys are per device";
  DeviceKeys k2 = sample_keys('j');  // a blind put replaces the whole record
  commit1(PutDeviceKeys{d, k2});
  got = store().device_keys(d);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(**got, k2);
  EXPECT_FALSE((*got)->previous_signed_prekey);
}

TEST_P(StoreContractTest, DeviceKeysOfSeveralDevicesAnswerEachInTheOrderAsked) {
  EXPECT_TRUE(must(store().device_keys_of({})).empty());
  const DeviceRef a{"alice", 1}, b{"bob", 3}, none{"carol", 1};
  commit1(PutDeviceKeys{a, sample_keys('a')});
  commit1(PutDeviceKeys{b, sample_keys('b')});
  auto got = must(store().device_keys_of({b, none, a}));
  ASSERT_EQ(got.size(), 3u);
  ASSERT_TRUE(got[0]);
  EXPECT_EQ(*got[0], sample_keys('b'));
  EXPECT_FALSE(got[1]) << "a device without keys";
  ASSERT_TRUE(got[2]);
  EXPECT_EQ(*got[2], sample_keys('a'));
}

TEST_P(StoreContractTest, OneTimePrekeysListInIdOrderPerDeviceWithLimit) {
  const DeviceRef a{"bob", 1}, b{"bob", 2}, c{"bo", 1};
  Batch batch;
  for (uint32_t id : {300u, 5u, 70000u, 1u, 0xFFFFFFFFu}) batch.add(PutOneTimePrekey{a, {id, "k" + std::to_string(id)}});
  batch.add(PutOneTimePrekey{b, {2, "other device"}});
  batch.add(PutOneTimePrekey{c, {3, "prefix user"}});
  commit(std::move(batch));
  auto all = store().one_time_prekeys(a, 100);
  ASSERT_TRUE(all);
  std::vector<uint32_t> ids;
  for (const auto& k : *all) ids.push_back(k.id);
  EXPECT_EQ(ids, (std::vector<uint32_t>{1, 5, 300, 70000, 0xFFFFFFFFu}));
  EXPECT_EQ((*all)[2].public_key, "k300");
  auto two = store().one_time_prekeys(a, 2);
  ASSERT_TRUE(two);
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[1].id, 5u);
  auto zero = store().one_time_prekeys(a, 0);
  ASSERT_TRUE(zero);
  EXPECT_TRUE(zero->empty());
  auto other = store().one_time_prekeys(b, 100);
  ASSERT_TRUE(other);
  ASSERT_EQ(other->size(), 1u);
  EXPECT_EQ((*other)[0], (OneTimePrekey{2, "other device"}));
}

TEST_P(StoreContractTest, OneTimePrekeyDeleteAndReputInOneBatchApplyInOrder) {
  const DeviceRef d{"carol", 1};
  commit1(PutOneTimePrekey{d, {1, "one"}});
  commit1(PutOneTimePrekey{d, {2, "two"}});
  Batch batch;  // delete 1; put 3 then delete it; delete 2 then put it again
  batch.add(DeleteOneTimePrekey{d, 1});
  batch.add(PutOneTimePrekey{d, {3, "three"}});
  batch.add(DeleteOneTimePrekey{d, 3});
  batch.add(DeleteOneTimePrekey{d, 2});
  batch.add(PutOneTimePrekey{d, {2, "two again"}});
  batch.add(DeleteOneTimePrekey{d, 99});  // absent: a blind delete is no error
  commit(std::move(batch));
  auto left = store().one_time_prekeys(d, 10);
  ASSERT_TRUE(left);
  EXPECT_EQ(*left, (std::vector<OneTimePrekey>{{2, "two again"}}));
}

TEST_P(StoreContractTest, KeysSurviveReopen) {
  const DeviceRef d{"dave", 3};
  commit1(PutDeviceKeys{d, sample_keys('d')}, /*sync=*/true);
  commit1(PutOneTimePrekey{d, {9, "nine"}}, /*sync=*/true);
  reopen();
  auto k = store().device_keys(d);
  ASSERT_TRUE(k && *k);
  EXPECT_EQ(**k, sample_keys('d'));
  auto p = store().one_time_prekeys(d, 10);
  ASSERT_TRUE(p);
  EXPECT_EQ(*p, (std::vector<OneTimePrekey>{{9, "nine"}}));
}

TEST_P(StoreContractTest, KeyOpsWithNulInTheUserAreRefused) {
  Batch batch;
  batch.add(PutOneTimePrekey{DeviceRef{"ok", 1}, {1, "x"}});
  batch.add(PutDeviceKeys{DeviceRef{std::string("a\0b", 3), 1}, sample_keys('n')});
  auto r = store().commit(batch, false);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  auto p = store().one_time_prekeys(DeviceRef{"ok", 1}, 10);
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->empty()) << "nothing of a refused batch is written";
}

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(StoreContractTest);

}  // namespace tern::store::contract

// ---- media and message expiry (issue 11) ----
namespace tern::store::contract {
namespace {

const std::string kIdA(64, 'a');
const std::string kIdB(64, 'b');

std::string frame_with_expiry(const std::string& conv, Seq seq, int64_t expires_at, const std::string& body) {
  return R"({"type":"message","conversation_id":")" + conv + R"(","seq":)" + std::to_string(seq) +
         R"(,"sender":"alice","sender_device":1,"ts":1,"body":")" + body + R"(","expires_at":)" +
         std::to_string(expires_at) + R"(,"media":[")" + kIdA + R"("]})";
}

}  // namespace

TEST_P(StoreContractTest, MediaOwnersAndPendingIndex) {
  Batch b;
  b.add(PutMedia{kIdA, "alice", 100, 1000});
  b.add(PutMedia{kIdA, "bob", 100, 2000});
  b.add(PutMedia{kIdB, "alice", 7, 3000});
  commit(std::move(b));
  auto owners = store().media_owners(kIdA);
  ASSERT_TRUE(owners.ok());
  ASSERT_EQ(owners->size(), 2u);
  EXPECT_EQ((*owners)[0].user, "alice");
  EXPECT_EQ((*owners)[0].size, 100u);
  EXPECT_EQ((*owners)[0].created_ts, 1000);
  EXPECT_EQ((*owners)[1].user, "bob");
  auto mine = store().user_media("alice", 10);
  ASSERT_TRUE(mine.ok());
  ASSERT_EQ(mine->size(), 2u);
  EXPECT_EQ((*mine)[0].second + (*mine)[1].second, 107u);
  // Pending uploads older than the cut-off, oldest first.
  auto pending = store().pending_media(2500, 10);
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending->size(), 2u);
  EXPECT_EQ((*pending)[0].owner, "alice");
  EXPECT_EQ((*pending)[0].id, kIdA);
  EXPECT_EQ((*pending)[1].owner, "bob");
  commit1(DropPendingMedia{kIdA, "alice", 1000});
  commit1(DeleteMedia{kIdA, "bob"});
  pending = store().pending_media(2500, 10);
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].owner, "bob");
  owners = store().media_owners(kIdA);
  ASSERT_TRUE(owners.ok());
  ASSERT_EQ(owners->size(), 1u);
  EXPECT_EQ((*owners)[0].user, "alice");
  reopen();
  owners = store().media_owners(kIdA);
  ASSERT_TRUE(owners.ok());
  EXPECT_EQ(owners->size(), 1u);
}

TEST_P(StoreContractTest, MessagesIndexTheirMediaAndExpiry) {
  Batch b;
  b.add(AppendMessage{"c1", 1, frame_with_expiry("c1", 1, 5000, "Y2FuYXJ5"), 5000, {kIdA}});
  b.add(AppendMessage{"c1", 2, "{}", 0, {kIdA, kIdB}});
  b.add(AppendMessage{"c2", 1, frame_with_expiry("c2", 1, 4000, "eA=="), 4000, {}});
  commit(std::move(b));
  auto refs = store().media_refs(kIdA, 10);
  ASSERT_TRUE(refs.ok());
  ASSERT_EQ(refs->size(), 2u);
  EXPECT_EQ((*refs)[0].conversation_id, "c1");
  EXPECT_EQ((*refs)[0].seq, 1u);
  EXPECT_EQ((*refs)[0].expires_at, 5000);
  EXPECT_EQ((*refs)[1].seq, 2u);
  EXPECT_EQ((*refs)[1].expires_at, 0);

  auto due = store().expiring_messages(4999, 10);
  ASSERT_TRUE(due.ok());
  ASSERT_EQ(due->size(), 1u);
  EXPECT_EQ((*due)[0].conversation_id, "c2");
  due = store().expiring_messages(5000, 10);
  ASSERT_TRUE(due.ok());
  ASSERT_EQ(due->size(), 2u);
  EXPECT_EQ((*due)[1].conversation_id, "c1");
  EXPECT_EQ((*due)[1].media, std::vector<std::string>{kIdA});

  ASSERT_TRUE(store().erase_expired(*due).ok());
  auto msgs = store().read_messages("c1", 0, 10);
  ASSERT_TRUE(msgs.ok());
  ASSERT_EQ(msgs->size(), 2u);  // the seq keeps its place
  EXPECT_EQ((*msgs)[0].frame.find("Y2FuYXJ5"), std::string::npos);
  EXPECT_NE((*msgs)[0].frame.find(R"("expired":true)"), std::string::npos);
  EXPECT_EQ((*msgs)[0].frame.find(kIdA), std::string::npos);  // media ids gone with it

  Batch done;
  for (const auto& m : *due) done.add(MessageExpired{m.conversation_id, m.seq, m.expires_at, m.media});
  commit(std::move(done));
  due = store().expiring_messages(10000, 10);
  ASSERT_TRUE(due.ok());
  EXPECT_TRUE(due->empty());
  refs = store().media_refs(kIdA, 10);
  ASSERT_TRUE(refs.ok());
  ASSERT_EQ(refs->size(), 1u);
  EXPECT_EQ((*refs)[0].seq, 2u);
}

}  // namespace tern::store::contract
