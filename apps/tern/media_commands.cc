#include "media_commands.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

#include <boost/json.hpp>

#include "client/attachment_cipher.h"
#include "client/blocking.h"
#include "client/io_thread.h"
#include "terminal.h"

namespace tern::cli {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// "\r[#####.....]  45%  1.2 / 2.5 MB" on stderr when it is a terminal; nothing otherwise.
client::Progress progress_bar(std::string label) {
  if (!::isatty(STDERR_FILENO)) return {};
  return [label = std::move(label)](uint64_t done, uint64_t total) {
    constexpr int kWidth = 30;
    const double f = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
    const int filled = static_cast<int>(f * kWidth);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    char tail[64];
    std::snprintf(tail, sizeof tail, "] %3d%%  %.1f / %.1f MB", static_cast<int>(f * 100), done / 1e6, total / 1e6);
    std::cerr << "\r" << label << " [" << bar << tail << (done >= total ? "\n" : "") << std::flush;
  };
}

// A file name from a message is untrusted: only its last component, printable, not "." or "..".
std::string safe_name(const client::Attachment& a) {
  std::string n = fs::path(a.name).filename().string();
  std::string out;
  for (char c : n)
    if (static_cast<unsigned char>(c) >= 0x20 && c != '/' && c != '\\' && c != 0x7f) out += c;
  if (out.empty() || out == "." || out == "..") out = a.media_id.substr(0, 16);
  return out;
}

}  // namespace

Result<client::Attachment> upload_file(const client::ServerUrl& url, const std::string& token, const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return make_error(ErrorCode::kInvalidArgument, "cannot read " + path + ": " + ec.message());
  if (size > client::kMaxAttachmentBytes)
    return make_error(ErrorCode::kTooLarge, path + " is over " + std::to_string(client::kMaxAttachmentBytes) + " bytes");
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) return make_error(ErrorCode::kInvalidArgument, "cannot read " + path);
  const std::string name = fs::path(path).filename().string();
  return client::upload_attachment(url, token, bytes, "application/octet-stream", name, progress_bar("upload " + name));
}

Result<std::vector<std::string>> save_attachments(const client::Api& api, const client::ServerUrl& url,
                                                  const std::string& token, const std::string& conversation_id, Seq seq,
                                                  const std::string& out) {
  if (seq == 0) return make_error(ErrorCode::kInvalidArgument, "seq must be >= 1");
  auto page = client::wait_for<client::HistoryPage>(
      [&](auto cb) { api.history(conversation_id, seq - 1, 1, std::move(cb)); }, 30s);
  if (!page) return page.error();
  if (page->messages.empty() || page->messages.front().seq != seq)
    return make_error(ErrorCode::kNotFound, "no message " + std::to_string(seq) + " in this conversation");
  const client::Message& m = page->messages.front();
  if (m.expires_at && *m.expires_at <= std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch()).count())
    return make_error(ErrorCode::kNotFound, "message " + std::to_string(seq) + " has expired");
  auto att = client::parse_attachment_body(m.body);
  if (!att || att->second.empty())
    return make_error(ErrorCode::kNotFound, "message " + std::to_string(seq) + " has no attachment");
  std::vector<std::string> written;
  const bool into_dir = out.empty() || att->second.size() > 1 || fs::is_directory(out);
  for (const auto& a : att->second) {
    const std::string path = into_dir ? (fs::path(out.empty() ? "." : out) / safe_name(a)).string() : out;
    if (fs::exists(path)) return make_error(ErrorCode::kExists, path + " exists; not overwritten");
    auto bytes = client::download_attachment(url, token, a, progress_bar("download " + safe_name(a)));
    if (!bytes) return bytes.error();
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
    if (!f) return make_error(ErrorCode::kInternal, "cannot write " + path);
    written.push_back(path);
  }
  return written;
}

int cmd_download(const Global& g, const std::string& target, Seq seq, const std::string& out) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  client::IoThread io;
  auto url = checked_server(io, p->server, false);
  if (!url) return fail(g, url.error());
  client::Api api(io.context(), *url, p->credentials.token, cli_api_options());
  auto t = resolve_target(api, p->credentials.user, target);
  if (!t) return fail(g, t.error());
  auto written = save_attachments(api, *url, p->credentials.token, t->conversation_id, seq, out);
  if (!written) return fail(g, written.error());
  if (g.json) {
    boost::json::array a;
    for (const auto& w : *written) a.emplace_back(w);
    std::cout << boost::json::serialize(boost::json::object{{"saved", std::move(a)}}) << "\n";
  } else {
    for (const auto& w : *written) std::cout << "saved " << printable(w) << "\n";
  }
  return kExitOk;
}

}  // namespace tern::cli
