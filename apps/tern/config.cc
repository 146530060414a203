#include "config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <boost/json.hpp>

namespace tern::cli {
namespace json = boost::json;

namespace {

Result<void> ensure_dir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) == 0) return {};
  if (errno != EEXIST) return make_error(ErrorCode::kInternal, "cannot create " + path + ": " + std::strerror(errno));
  return {};
}

}  // namespace

Result<std::string> config_dir() {
  std::string base;
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x == '/') {
    base = x;
  } else if (const char* h = std::getenv("HOME"); h && *h) {
    base = std::string(h) + "/.config";
  } else {
    return make_error(ErrorCode::kInternal, "neither XDG_CONFIG_HOME nor HOME is set");
  }
  if (auto r = ensure_dir(base, 0700); !r) return r.error();
  const std::string dir = base + "/tern";
  if (auto r = ensure_dir(dir, 0700); !r) return r.error();
  ::chmod(dir.c_str(), 0700);  // tighten a directory created by someone else's umask
  return dir;
}

Result<std::optional<Profile>> load_profile() {
  auto dir = config_dir();
  if (!dir) return dir.error();
  std::ifstream in(*dir + "/credentials.json");
  if (!in) return std::optional<Profile>();
  std::stringstream ss;
  ss << in.rdbuf();
  boost::system::error_code ec;
  json::value v = json::parse(ss.str(), ec);
  if (ec || !v.is_object()) return make_error(ErrorCode::kMalformed, *dir + "/credentials.json is not valid JSON");
  const auto& o = v.as_object();
  Profile p;
  auto s = [&](const char* k) {
    const auto* f = o.if_contains(k);
    return f && f->is_string() ? std::string(f->as_string()) : std::string();
  };
  p.server = s("server");
  p.ca_file = s("ca");
  p.credentials.user = s("user");
  p.credentials.token = s("token");
  if (const auto* d = o.if_contains("device"); d && d->is_int64()) p.credentials.device = static_cast<uint32_t>(d->as_int64());
  else if (d && d->is_uint64()) p.credentials.device = static_cast<uint32_t>(d->as_uint64());
  if (p.credentials.user.empty() || p.credentials.token.empty() || p.credentials.device == 0)
    return make_error(ErrorCode::kMalformed, *dir + "/credentials.json lacks user, device or token");
  return std::optional<Profile>(std::move(p));
}

namespace {
// Writes `text` to dir/name through a temporary file (0600), fsynced, renamed over the old one.
Result<void> write_private(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string tmp = dir + "/" + name + ".tmp";
  const std::string final_path = dir + "/" + name;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return make_error(ErrorCode::kInternal, "cannot write " + tmp + ": " + std::strerror(errno));
  ::fchmod(fd, 0600);
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), final_path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return make_error(ErrorCode::kInternal, "cannot write " + final_path);
  }
  return {};
}
}  // namespace

Result<void> save_profile(const Profile& p) {
  auto dir = config_dir();
  if (!dir) return dir.error();
  json::object o{{"server", p.server},
                 {"user", p.credentials.user},
                 {"device", p.credentials.device},
                 {"token", p.credentials.token}};
  if (!p.ca_file.empty()) o["ca"] = p.ca_file;
  return write_private(*dir, "credentials.json", json::serialize(o) + "\n");
}

Result<void> save_conversations(const std::vector<client::ConversationInfo>& list) {
  auto dir = config_dir();
  if (!dir) return dir.error();
  json::array a;
  for (const auto& c : list) {
    json::array members;
    for (const auto& m : c.members) members.emplace_back(m);
    a.push_back(json::object{{"conversation_id", c.conversation_id},
                             {"type", c.type},
                             {"name", c.name},
                             {"head", c.head},
                             {"members", std::move(members)}});
  }
  return write_private(*dir, "conversations.json", json::serialize(json::object{{"conversations", std::move(a)}}) + "\n");
}

Result<std::vector<client::ConversationInfo>> load_conversations() {
  auto dir = config_dir();
  if (!dir) return dir.error();
  std::vector<client::ConversationInfo> out;
  std::ifstream in(*dir + "/conversations.json");
  if (!in) return out;
  std::stringstream ss;
  ss << in.rdbuf();
  boost::system::error_code ec;
  json::value v = json::parse(ss.str(), ec);
  const json::value* list = !ec && v.is_object() ? v.as_object().if_contains("conversations") : nullptr;
  if (!list || !list->is_array()) return make_error(ErrorCode::kMalformed, *dir + "/conversations.json is not valid");
  for (const auto& e : list->as_array()) {
    if (!e.is_object()) continue;
    const auto& o = e.as_object();
    auto s = [&](const char* k) {
      const auto* f = o.if_contains(k);
      return f && f->is_string() ? std::string(f->as_string()) : std::string();
    };
    client::ConversationInfo c;
    c.conversation_id = s("conversation_id");
    c.type = s("type");
    c.name = s("name");
    if (const auto* h = o.if_contains("head"); h && h->is_number()) c.head = h->to_number<Seq>();
    if (const auto* m = o.if_contains("members"); m && m->is_array())
      for (const auto& u : m->as_array())
        if (u.is_string()) c.members.emplace_back(u.as_string());
    if (!c.conversation_id.empty()) out.push_back(std::move(c));
  }
  return out;
}

Result<std::string> state_db_path() {
  auto dir = config_dir();
  if (!dir) return dir.error();
  return *dir + "/state.sqlite";
}

Result<std::string> keyring_dir() {
  auto dir = config_dir();
  if (!dir) return dir.error();
  return *dir + "/keys";
}

namespace {
std::string g_passphrase_file;
}

void set_passphrase_file(std::string path) { g_passphrase_file = std::move(path); }

Result<std::optional<std::string>> keyring_passphrase() {
  std::string path = g_passphrase_file;
  if (path.empty())
    if (const char* env = std::getenv("TERN_PASSPHRASE_FILE")) path = env;
  if (path.empty()) return std::optional<std::string>{};
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line))
    return make_error(ErrorCode::kInvalidArgument, "cannot read the passphrase file " + path);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty()) return make_error(ErrorCode::kInvalidArgument, "the passphrase file " + path + " is empty");
  return std::optional<std::string>(std::move(line));
}

client::KeyringOptions keyring_options(const std::optional<std::string>& passphrase) {
  client::KeyringOptions o;
  if (passphrase) o.passphrase = *passphrase;
  return o;
}

}  // namespace tern::cli
