#include "client/api.h"

#include <random>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>

#include "base/base64.h"
#include "client/convert.h"
#include "client/errors.h"
#include "client/http_call.h"

namespace tern::client {
namespace asio = boost::asio;
namespace json = boost::json;

struct Api::State {
  asio::io_context& ioc;
  ServerUrl url;
  std::string token;
  ApiOptions options;
};

namespace {

uint64_t jitter_random() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

// Percent-encodes a path segment (conversation ids are printable ASCII and may hold ':' etc).
std::string encode_segment(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == ':' || c == '@') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

// One logical call: attempts, retry on the retryable answers, parse on success.
template <typename T>
struct Call : std::enable_shared_from_this<Call<T>> {
  std::shared_ptr<Api::State> st;
  HttpCallSpec spec;
  std::vector<int> ok_status;
  std::function<Result<T>(const std::string&)> parse;
  Callback<T> cb;
  int attempt = 0;
  std::unique_ptr<asio::steady_timer> timer;

  void start() {
    asio::post(st->ioc, [self = this->shared_from_this()] { self->attempt_once(); });
  }
  void attempt_once() {
    spec.timeout_ms = st->options.timeout_ms;
    http_call(st->ioc, st->url, spec, [self = this->shared_from_this()](Result<HttpResult> r) { self->on_result(std::move(r)); });
  }
  void on_result(Result<HttpResult> r) {
    std::optional<Error> err;
    if (!r) {
      err = r.error();
    } else if (std::find(ok_status.begin(), ok_status.end(), r->status) == ok_status.end()) {
      err = error_from_http(r->status, r->body);
    }
    if (!err) {
      cb(parse(r->body));
      return;
    }
    const bool idempotent = spec.method == "GET";
    const bool again = err->code == ErrorCode::kRateLimited ||
                       (idempotent && (err->code == ErrorCode::kOverloaded || err->code == ErrorCode::kDraining));
    if (again && backoff_allows(st->options.retry, attempt)) {
      const int64_t delay = backoff_delay_ms(st->options.retry, attempt++, jitter_random());
      timer = std::make_unique<asio::steady_timer>(st->ioc, std::chrono::milliseconds(delay));
      timer->async_wait([self = this->shared_from_this()](boost::system::error_code) { self->attempt_once(); });
      return;
    }
    cb(std::move(*err));
  }
};

template <typename T>
void run(const std::shared_ptr<Api::State>& st, std::string method, std::string target, std::string body, bool auth,
         std::vector<int> ok_status, std::function<Result<T>(const std::string&)> parse, Callback<T> cb) {
  auto c = std::make_shared<Call<T>>();
  c->st = st;
  c->spec.method = std::move(method);
  c->spec.target = std::move(target);
  c->spec.body = std::move(body);
  if (auth) c->spec.token = st->token;
  c->ok_status = std::move(ok_status);
  c->parse = std::move(parse);
  c->cb = std::move(cb);
  c->start();
}

std::string users_json(std::string_view key, const std::vector<std::string>& users) {
  json::array a;
  for (const auto& u : users) a.emplace_back(u);
  json::object o;
  o[key] = std::move(a);
  return json::serialize(o);
}

std::string add_remove_json(const std::vector<std::string>& add, const std::vector<std::string>& remove) {
  json::array a, r;
  for (const auto& u : add) a.emplace_back(u);
  for (const auto& u : remove) r.emplace_back(u);
  json::object o;
  o["add"] = std::move(a);
  o["remove"] = std::move(r);
  return json::serialize(o);
}

std::string conversation_path(const std::string& conversation_id, std::string_view tail = {}) {
  return "/v1/conversations/" + encode_segment(conversation_id) + std::string(tail);
}

}  // namespace

Api::Api(asio::io_context& ioc, ServerUrl url, std::string token, ApiOptions options)
    : state_(std::make_shared<State>(State{ioc, std::move(url), std::move(token), options})) {}
Api::~Api() = default;
Api::Api(const Api&) = default;
Api& Api::operator=(const Api&) = default;

const ServerUrl& Api::url() const { return state_->url; }

void Api::register_user(const std::string& user, Callback<Credentials> cb) const {
  json::object o{{"user", user}};
  run<Credentials>(state_, "POST", "/v1/users", json::serialize(o), false, {200, 201}, parse_credentials, std::move(cb));
}

Result<std::string> normalize_link_code(std::string_view typed) {
  static constexpr std::string_view kAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  std::string code;
  for (char ch : typed) {
    if (ch == ' ' || ch == '-' || ch == '\t') continue;
    const char up = (ch >= 'a' && ch <= 'z') ? static_cast<char>(ch - 'a' + 'A') : ch;
    if (kAlphabet.find(up) == std::string_view::npos || code.size() == 8)
      return make_error(ErrorCode::kInvalidArgument,
                        "a link code is 8 letters and digits like ABCD-EF23 (no 0, O, 1 or I)");
    code.push_back(up);
  }
  if (code.size() != 8)
    return make_error(ErrorCode::kInvalidArgument, "a link code is 8 letters and digits like ABCD-EF23 (no 0, O, 1 or I)");
  code.insert(4, "-");
  return code;
}

void Api::link_device(const std::string& user, const std::string& typed, Callback<Credentials> cb) const {
  auto code = normalize_link_code(typed);
  if (!code) {
    asio::post(state_->ioc, [cb = std::move(cb), e = code.error()]() mutable { cb(std::move(e)); });
    return;
  }
  json::object o{{"user", user}, {"code", *code}};
  run<Credentials>(state_, "POST", "/v1/devices/link", json::serialize(o), false, {200, 201}, parse_credentials,
                   std::move(cb));
}

void Api::healthz(Callback<void> cb) const {
  run<void>(state_, "GET", "/healthz", "", false, {200}, [](const std::string&) { return Result<void>(); },
            std::move(cb));
}

void Api::create_link_code(Callback<LinkCode> cb) const {
  run<LinkCode>(state_, "POST", "/v1/devices/link-codes", "{}", true, {200, 201}, parse_link_code, std::move(cb));
}

void Api::add_device(Callback<Credentials> cb) const {
  run<Credentials>(state_, "POST", "/v1/devices", "{}", true, {200, 201}, parse_credentials, std::move(cb));
}

void Api::create_direct(const std::string& user, Callback<std::string> cb) const {
  json::object o{{"type", "direct"}, {"members", json::array{json::value(user)}}};
  run<std::string>(state_, "POST", "/v1/conversations", json::serialize(o), true, {200, 201}, parse_conversation_id,
                   std::move(cb));
}

void Api::create_self(Callback<std::string> cb) const {
  run<std::string>(state_, "POST", "/v1/conversations", R"({"type":"self"})", true, {200, 201}, parse_conversation_id,
                   std::move(cb));
}

void Api::create_group(const std::string& name, const std::vector<std::string>& members,
                       Callback<std::string> cb) const {
  json::array a;
  for (const auto& m : members) a.emplace_back(m);
  json::object o{{"type", "group"}, {"name", name}, {"members", std::move(a)}};
  run<std::string>(state_, "POST", "/v1/conversations", json::serialize(o), true, {200, 201}, parse_conversation_id,
                   std::move(cb));
}

void Api::add_members(const std::string& conversation_id, const std::vector<std::string>& users,
                      Callback<std::vector<std::string>> cb) const {
  run<std::vector<std::string>>(state_, "POST", "/v1/conversations/" + encode_segment(conversation_id) + "/members",
                                users_json("add", users), true, {200}, parse_members_answer, std::move(cb));
}

void Api::remove_members(const std::string& conversation_id, const std::vector<std::string>& users,
                         Callback<std::vector<std::string>> cb) const {
  run<std::vector<std::string>>(state_, "POST", "/v1/conversations/" + encode_segment(conversation_id) + "/members",
                                users_json("remove", users), true, {200}, parse_members_answer, std::move(cb));
}

void Api::conversations(Callback<std::vector<ConversationInfo>> cb) const {
  run<std::vector<ConversationInfo>>(state_, "GET", "/v1/conversations", "", true, {200}, parse_conversations,
                                     std::move(cb));
}

void Api::conversation_info(const std::string& conversation_id, Callback<ConversationInfo> cb) const {
  run<ConversationInfo>(state_, "GET", conversation_path(conversation_id), "", true, {200}, parse_conversation_info,
                        std::move(cb));
}

void Api::create_channel(const std::string& name, bool is_public, Callback<std::string> cb) const {
  json::object o{{"type", "channel"}, {"name", name}, {"public", is_public}};
  run<std::string>(state_, "POST", "/v1/conversations", json::serialize(o), true, {200, 201}, parse_conversation_id,
                   std::move(cb));
}

void Api::join_channel(const std::string& conversation_id, Callback<JoinResult> cb) const {
  run<JoinResult>(state_, "POST", conversation_path(conversation_id, "/join"), "{}", true, {200}, parse_join,
                  std::move(cb));
}

void Api::leave_channel(const std::string& conversation_id, Callback<void> cb) const {
  run<void>(state_, "POST", conversation_path(conversation_id, "/leave"), "{}", true, {200},
            [](const std::string&) { return Result<void>(); }, std::move(cb));
}

void Api::change_subscribers(const std::string& conversation_id, const std::vector<std::string>& add,
                             const std::vector<std::string>& remove, Callback<uint64_t> cb) const {
  run<uint64_t>(state_, "POST", conversation_path(conversation_id, "/members"), add_remove_json(add, remove), true,
                {200}, parse_subscribers_answer, std::move(cb));
}

void Api::change_admins(const std::string& conversation_id, const std::vector<std::string>& add,
                        const std::vector<std::string>& remove, Callback<std::vector<std::string>> cb) const {
  run<std::vector<std::string>>(state_, "POST", conversation_path(conversation_id, "/admins"),
                                add_remove_json(add, remove), true, {200}, parse_admins_answer, std::move(cb));
}

void Api::history(const std::string& conversation_id, Seq after_seq, size_t limit, Callback<HistoryPage> cb) const {
  std::string target = "/v1/conversations/" + encode_segment(conversation_id) +
                       "/messages?after_seq=" + std::to_string(after_seq) + "&limit=" + std::to_string(limit);
  run<HistoryPage>(state_, "GET", std::move(target), "", true, {200},
                   [conversation_id](const std::string& body) { return parse_history(body, conversation_id); },
                   std::move(cb));
}

namespace {
Result<size_t> parse_key_count(const std::string& body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  const json::value* n = !ec && v.is_object() ? v.as_object().if_contains("count") : nullptr;
  if (!n || !n->is_number()) return make_error(ErrorCode::kMalformed, "key status without count");
  const uint64_t count = n->to_number<uint64_t>(ec);
  if (ec) return make_error(ErrorCode::kMalformed, "key count is not a non-negative integer");
  return static_cast<size_t>(count);
}
}  // namespace

void Api::upload_keys(const std::string& body, Callback<size_t> cb) const {
  run<size_t>(state_, "PUT", "/v1/keys", body, true, {200}, parse_key_count, std::move(cb));
}

void Api::key_count(Callback<size_t> cb) const {
  run<size_t>(state_, "GET", "/v1/keys", "", true, {200}, parse_key_count, std::move(cb));
}

void Api::key_bundles(const std::string& user, uint32_t device, Callback<std::string> cb) const {
  std::string target = "/v1/keys/" + encode_segment(user);
  if (device != 0) target += "/" + std::to_string(device);
  run<std::string>(state_, "GET", std::move(target), "", true, {200},
                   [](const std::string& body) -> Result<std::string> { return body; }, std::move(cb));
}

namespace {
Result<std::vector<UserDevice>> parse_user_devices(const std::string& body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  const json::value* devices = !ec && v.is_object() ? v.as_object().if_contains("devices") : nullptr;
  if (!devices || !devices->is_array()) return make_error(ErrorCode::kMalformed, "device list without devices");
  std::vector<UserDevice> out;
  for (const json::value& d : devices->as_array()) {
    const json::object* o = d.if_object();
    const json::value* id = o ? o->if_contains("device") : nullptr;
    if (!id || !id->is_number()) return make_error(ErrorCode::kMalformed, "device list entry without device");
    UserDevice u;
    u.device = static_cast<uint32_t>(id->to_number<uint64_t>(ec));
    if (ec || u.device == 0) return make_error(ErrorCode::kMalformed, "bad device number");
    if (const json::value* r = o->if_contains("registration_id"); r && r->is_number()) {
      const uint64_t n = r->to_number<uint64_t>(ec);
      if (ec || n > UINT32_MAX) return make_error(ErrorCode::kMalformed, "bad registration_id");
      u.registration_id = static_cast<uint32_t>(n);
    }
    if (const json::value* k = o->if_contains("identity_key"); k && k->is_string()) {
      auto raw = base64_decode(k->as_string());
      if (!raw || raw->size() != 33) return make_error(ErrorCode::kMalformed, "bad identity_key");
      u.identity_key = std::move(*raw);
    }
    out.push_back(std::move(u));
  }
  return out;
}
}  // namespace

void Api::user_devices(const std::string& user, Callback<std::vector<UserDevice>> cb) const {
  run<std::vector<UserDevice>>(state_, "GET", "/v1/users/" + encode_segment(user) + "/devices", "", true, {200},
                               parse_user_devices, std::move(cb));
}

}  // namespace tern::client
