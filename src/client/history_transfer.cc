#include "client/history_transfer.h"

#include <boost/json.hpp>

#include "base/base64.h"
#include "base/clock.h"
#include "base/ids.h"
#include "base/log.h"
#include "client/sqlite_store.h"
#include "proto/limits.h"

namespace tern::client {
namespace json = boost::json;
namespace {

constexpr const char* kRequestedSetting = "history_requested";
constexpr int64_t kFormatVersion = 1;

json::object entry_json(const Message& m) {
  json::object o{{"c", m.conversation_id}, {"s", m.seq},  {"u", m.sender},
                 {"d", m.sender_device},   {"t", m.ts},   {"b", base64_encode(m.body)}};
  if (m.reply_to) o["r"] = *m.reply_to;
  if (m.expires_at) o["x"] = *m.expires_at;
  if (m.system_json) o["j"] = *m.system_json;
  return o;
}

std::string payload_of(json::array& entries) {
  return json::serialize(json::object{{"v", kFormatVersion}, {"entries", std::move(entries)}});
}

Error malformed(const std::string& why) { return make_error(ErrorCode::kMalformed, "history payload: " + why); }

bool history_conversation(std::string_view id) {
  return valid_conversation_id(id) && (id.starts_with("d-") || id.starts_with("g-"));
}

Result<Message> entry_from(const json::value& v) {
  const json::object* o = v.if_object();
  if (!o) return malformed("an entry is not an object");
  const auto* c = o->if_contains("c");
  const auto* s = o->if_contains("s");
  const auto* u = o->if_contains("u");
  const auto* d = o->if_contains("d");
  const auto* t = o->if_contains("t");
  const auto* b = o->if_contains("b");
  if (!c || !c->is_string() || !history_conversation(c->as_string())) return malformed("bad conversation");
  if (!s || (!s->is_uint64() && !(s->is_int64() && s->as_int64() > 0))) return malformed("bad seq");
  if (!u || !u->is_string() || !valid_user_id(u->as_string())) return malformed("bad sender");
  if (!d || !(d->is_int64() || d->is_uint64())) return malformed("bad sender device");
  if (!t || (!t->is_int64() && !t->is_uint64())) return malformed("bad ts");
  if (!b || !b->is_string()) return malformed("bad body");
  Message m;
  m.conversation_id = std::string(c->as_string());
  m.seq = s->is_uint64() ? s->as_uint64() : static_cast<Seq>(s->as_int64());
  const int64_t device = d->is_int64() ? d->as_int64() : static_cast<int64_t>(std::min<uint64_t>(d->as_uint64(), INT64_MAX));
  if (m.seq == 0 || device < 0 || device > UINT32_MAX) return malformed("bad seq or device");
  m.sender = std::string(u->as_string());
  m.sender_device = static_cast<uint32_t>(device);
  m.ts = t->is_int64() ? t->as_int64() : static_cast<int64_t>(std::min<uint64_t>(t->as_uint64(), INT64_MAX));
  auto body = base64_decode(b->as_string());
  if (!body || body->size() > proto::Limits{}.max_body_bytes) return malformed("bad body");
  m.body = std::move(*body);
  if (const auto* r = o->if_contains("r")) {
    if (!r->is_uint64() && !(r->is_int64() && r->as_int64() > 0)) return malformed("bad reply_to");
    m.reply_to = r->is_uint64() ? r->as_uint64() : static_cast<Seq>(r->as_int64());
  }
  if (const auto* x = o->if_contains("x")) {
    if (!x->is_int64()) return malformed("bad expires_at");
    m.expires_at = x->as_int64();
  }
  if (const auto* j = o->if_contains("j")) {
    if (!j->is_string()) return malformed("bad system message");
    m.system_json = std::string(j->as_string());
  }
  return m;
}

}  // namespace

std::vector<std::string> encode_history(const std::vector<Message>& entries, size_t max_chunk) {
  std::vector<std::string> out;
  json::array chunk;
  json::array none;
  const size_t envelope = payload_of(none).size();
  size_t size = envelope;
  for (const auto& m : entries) {
    json::object e = entry_json(m);
    const size_t n = json::serialize(e).size() + 1;  // and its comma
    if (envelope + n > max_chunk) continue;  // alone too large for a chunk: left out
    if (size + n > max_chunk) {
      out.push_back(payload_of(chunk));
      chunk = json::array();
      size = envelope;
    }
    chunk.emplace_back(std::move(e));
    size += n;
  }
  if (!chunk.empty()) out.push_back(payload_of(chunk));
  return out;
}

Result<std::vector<Message>> decode_history(std::string_view payload) {
  if (payload.size() > kMaxHistoryChunk) return make_error(ErrorCode::kTooLarge, "history payload too large");
  boost::system::error_code ec;
  json::parse_options po;
  po.max_depth = 8;
  json::value v = json::parse(payload, ec, {}, po);
  if (ec) return malformed("not JSON");
  const json::object* o = v.if_object();
  const json::value* version = o ? o->if_contains("v") : nullptr;
  const json::value* entries = o ? o->if_contains("entries") : nullptr;
  if (!version || !version->is_int64() || version->as_int64() != kFormatVersion)
    return malformed("unknown version");
  if (!entries || !entries->is_array()) return malformed("no entries");
  if (entries->as_array().size() > kMaxHistoryEntries) return make_error(ErrorCode::kTooLarge, "too many history entries");
  std::vector<Message> out;
  out.reserve(entries->as_array().size());
  for (const auto& e : entries->as_array()) {
    auto m = entry_from(e);
    if (!m) return m.error();
    out.push_back(std::move(*m));
  }
  return out;
}

char history_kind(std::string_view id) {
  if (id.starts_with("hr-")) return kHistoryRequestKind;
  if (id.starts_with("h-")) return kHistoryKind;
  return 0x01;
}

std::optional<uint32_t> history_target(std::string_view id) {
  if (!id.starts_with("h-")) return std::nullopt;
  id.remove_prefix(2);
  uint64_t d = 0;
  size_t i = 0;
  for (; i < id.size() && id[i] >= '0' && id[i] <= '9' && d <= UINT32_MAX; ++i) d = d * 10 + (id[i] - '0');
  if (i == 0 || d == 0 || d > UINT32_MAX) return std::nullopt;
  return static_cast<uint32_t>(d);
}

HistoryTransfer::HistoryTransfer(Credentials self, Api api, SqliteStore& store, HistoryOptions options, Hooks hooks)
    : self_(std::move(self)), api_(std::move(api)), store_(store), options_(options), hooks_(std::move(hooks)) {}

void HistoryTransfer::on_start() {
  auto done = store_.setting(kRequestedSetting);
  if (!done || *done) return;
  auto post = hooks_.post;
  api_.user_devices(self_.user, [this, post](Result<std::vector<UserDevice>> r) {
    post([this, post, r = std::move(r)] {
      if (!r) return spdlog::info("component=client event=history_request_deferred error=\"{}\"", r.error().message);
      bool others = false, newest = true;
      for (const auto& d : *r) {
        if (d.device == self_.device || d.registration_id == 0) continue;
        others = true;
        if (d.device > self_.device) newest = false;
      }
      // Only the newest device asks (a device linked now); the first device has no one to ask.
      if (!others || !newest) {
        (void)store_.set_setting(kRequestedSetting, "no");
        return;
      }
      api_.create_self([this, post](Result<std::string> id) {  // on an io thread: `this` only on the strand
        post([this, id = std::move(id)] {
          if (!id) return spdlog::info("component=client event=history_request_deferred error=\"{}\"", id.error().message);
          OutboxEntry e{"hr-" + std::to_string(self_.device), *id, "", std::nullopt, std::nullopt, now_ms(), {}};
          hooks_.enqueue(std::move(e));
          (void)store_.set_setting(kRequestedSetting, "yes");
          spdlog::info("component=client event=history_requested conversation={}", *id);
        });
      });
    });
  });
}

void HistoryTransfer::on_control(const Message& m, std::string_view plain) {
  if (plain.empty() || m.sender != self_.user || m.sender_device == self_.device) return;
  if (plain[0] == kHistoryRequestKind) return answer(m);
  if (plain[0] != kHistoryKind) return;
  auto n = apply(plain.substr(1));
  if (!n) {
    spdlog::warn("component=client event=history_refused seq={} error=\"{}\"", m.seq, n.error().message);
    return;
  }
  spdlog::info("component=client event=history_received entries={} from={}:{}", *n, m.sender, m.sender_device);
  if (hooks_.received) hooks_.received(*n);
}

Result<size_t> HistoryTransfer::apply(std::string_view payload) {
  auto entries = decode_history(payload);
  if (!entries) return entries.error();
  const int64_t now = now_ms();
  size_t fresh = 0;
  for (const auto& m : *entries) {
    if (m.expires_at && *m.expires_at <= now) continue;  // expired on the way: not kept
    auto have = store_.message(m.conversation_id, m.seq);
    if (!have) return have.error();
    if (*have && (!(*have)->body.empty() || (*have)->system_json)) continue;  // already readable here
    if (auto r = store_.save_message(m); !r) return r.error();
    ++fresh;
    if (m.expires_at && hooks_.track_expiry) hooks_.track_expiry(m);
  }
  return fresh;
}

void HistoryTransfer::answer(const Message& request) {
  // N or M of 0: this device does not share its history (Options::history_messages).
  if (options_.per_conversation == 0 || options_.conversations == 0) {
    spdlog::info("component=client event=history_not_shared to={}:{}", self_.user, request.sender_device);
    return;
  }
  auto convs = store_.recent_conversations(options_.conversations);
  if (!convs) return spdlog::warn("component=client event=history_failed error=\"{}\"", convs.error().message);
  std::vector<Message> all;
  const int64_t now = now_ms();
  for (const auto& c : *convs) {
    auto msgs = store_.last_messages(c, options_.per_conversation, now);
    if (!msgs) return spdlog::warn("component=client event=history_failed error=\"{}\"", msgs.error().message);
    all.insert(all.end(), std::make_move_iterator(msgs->begin()), std::make_move_iterator(msgs->end()));
  }
  const auto chunks = encode_history(all);
  const std::string prefix =
      "h-" + std::to_string(request.sender_device) + "-" + std::to_string(request.seq) + "-";
  for (size_t i = 0; i < chunks.size(); ++i) {
    OutboxEntry e{prefix + std::to_string(i), request.conversation_id, base64_encode(chunks[i]),
                  std::nullopt, std::nullopt, now, {}};
    hooks_.enqueue(std::move(e));
  }
  spdlog::info("component=client event=history_sent to={}:{} conversations={} entries={} chunks={}", self_.user,
               request.sender_device, convs->size(), all.size(), chunks.size());
}

}  // namespace tern::client
