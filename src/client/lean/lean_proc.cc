#include "client/lean/lean_proc.h"

#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace tern::client::lean {
namespace {

Result<std::string> slurp(const std::string& path) {
  std::ifstream in(path);
  if (!in) return make_error(ErrorCode::kNotFound, "cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Result<int64_t> parse_stat_cpu_ticks(std::string_view stat) {
  const size_t close = stat.rfind(')');
  if (close == std::string_view::npos) return make_error(ErrorCode::kMalformed, "stat: no command name");
  // After ") " come fields 3.. (state is field 3); utime and stime are fields 14 and 15.
  std::string_view rest = stat.substr(close + 1);
  int field = 2;
  int64_t total = 0;
  int found = 0;
  size_t pos = 0;
  while (pos < rest.size() && found < 2) {
    while (pos < rest.size() && rest[pos] == ' ') ++pos;
    size_t end = rest.find(' ', pos);
    if (end == std::string_view::npos) end = rest.size();
    ++field;
    if (field == 14 || field == 15) {
      int64_t v = 0;
      auto [p, ec] = std::from_chars(rest.data() + pos, rest.data() + end, v);
      if (ec != std::errc()) return make_error(ErrorCode::kMalformed, "stat: bad cpu field");
      total += v;
      ++found;
    }
    pos = end;
  }
  if (found != 2) return make_error(ErrorCode::kMalformed, "stat: too few fields");
  return total;
}

Result<int64_t> parse_status_rss_kb(std::string_view status) {
  const size_t at = status.find("VmRSS:");
  if (at == std::string_view::npos) return make_error(ErrorCode::kMalformed, "status: no VmRSS");
  size_t pos = at + 6;
  while (pos < status.size() && (status[pos] == ' ' || status[pos] == '\t')) ++pos;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(status.data() + pos, status.data() + status.size(), v);
  if (ec != std::errc()) return make_error(ErrorCode::kMalformed, "status: bad VmRSS");
  return v;
}

Result<int64_t> parse_schedstat_wait_ns(std::string_view s) {
  const size_t sp = s.find(' ');
  if (sp == std::string_view::npos) return make_error(ErrorCode::kMalformed, "schedstat: one field");
  size_t end = s.find_first_of(" \n", sp + 1);
  if (end == std::string_view::npos) end = s.size();
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data() + sp + 1, s.data() + end, v);
  if (ec != std::errc() || p != s.data() + end) return make_error(ErrorCode::kMalformed, "schedstat: bad wait field");
  return v;
}

Result<ProcSample> sample_process(int pid) {
  const std::string base = "/proc/" + std::to_string(pid);
  auto stat = slurp(base + "/stat");
  if (!stat) return stat.error();
  auto status = slurp(base + "/status");
  if (!status) return status.error();
  auto ticks = parse_stat_cpu_ticks(*stat);
  if (!ticks) return ticks.error();
  auto rss = parse_status_rss_kb(*status);
  if (!rss) return rss.error();
  const long hz = ::sysconf(_SC_CLK_TCK);
  ProcSample out{*ticks * 1'000'000 / (hz > 0 ? hz : 100), *rss};
  // Threads come and go between listing and reading: what cannot be read is left out.
  std::error_code ec;
  int64_t wait_ns = 0;
  bool any = false;
  for (const auto& task : std::filesystem::directory_iterator(base + "/task", ec)) {
    auto line = slurp(task.path().string() + "/schedstat");
    if (!line) continue;
    if (auto w = parse_schedstat_wait_ns(*line)) {
      wait_ns += *w;
      any = true;
    }
  }
  if (any) out.runqueue_wait_us = wait_ns / 1000;
  return out;
}

int64_t self_cpu_us() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1'000'000LL + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

}  // namespace tern::client::lean
