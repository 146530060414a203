#include "bench_coordinator.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "base/clock.h"
#include "bench_control.h"
#include "bench_report.h"
#include "bench_worker.h"
#include "client/lean/lean_http.h"
#include "client/lean/lean_proc.h"

namespace tern::bench {
namespace json = boost::json;
namespace {

struct WorkerProc {
  pid_t pid = -1;
  int from_fd = -1;  // worker → coordinator
  int to_fd = -1;    // coordinator → worker
  std::string buf;
  bool eof = false;
  bool has_result = false;
  std::optional<std::pair<std::string, json::value>> barrier;  // name, data
  json::value progress;
};

double get_num(const json::value& v, std::string_view k) {
  const auto* o = v.if_object();
  const auto* x = o ? o->if_contains(k) : nullptr;
  if (!x) return 0;
  boost::system::error_code ec;
  const double d = x->to_number<double>(ec);
  return ec ? 0 : d;
}

class Coordinator {
 public:
  Coordinator(const BenchOptions& opt, std::vector<WorkerProc> procs, ChannelSetup channel)
      : opt_(opt), procs_(std::move(procs)), metrics_token_(std::move(channel.poster_token)) {
    report_.opt = &opt_;
    report_.channel_id = std::move(channel.id);
  }

  int run() {
    started_us_ = mono_us();
    last_print_us_ = started_us_;
    server_first_ = sample_server();
    while (!all_done()) {
      std::vector<pollfd> fds;
      std::vector<size_t> who;
      for (size_t i = 0; i < procs_.size(); ++i) {
        if (procs_[i].eof) continue;
        fds.push_back(pollfd{procs_[i].from_fd, POLLIN, 0});
        who.push_back(i);
      }
      const int n = ::poll(fds.data(), fds.size(), 250);
      if (n < 0 && errno != EINTR) {
        report_.fatal.push_back("poll failed");
        break;
      }
      for (size_t k = 0; n > 0 && k < fds.size(); ++k)
        if (fds[k].revents & (POLLIN | POLLHUP | POLLERR)) read_from(procs_[who[k]]);
      if (!report_.fatal.empty()) break;
      check_barrier();
      if (!opt_.quiet && mono_us() - last_print_us_ >= 1'000'000) print_progress();
    }
    finish();
    return report_.exit_code();
  }

 private:
  bool all_done() const {
    for (const auto& p : procs_)
      if (!p.eof) return false;
    return true;
  }

  // ternd's store counters, read with a user's token (the channel's poster): nullopt when there
  // is none, or /metrics does not answer (e.g. ternd runs with a separate metrics token).
  std::optional<StoreCounters> sample_store() const {
    if (metrics_token_.empty()) return std::nullopt;
    auto addr = lean::parse_server_url(opt_.server, opt_.ca_file);
    if (!addr) return std::nullopt;
    lean::HttpClient http(*addr, 5000);
    auto r = http.get("/metrics", metrics_token_);
    if (!r || r->status != 200) return std::nullopt;
    auto w = prometheus_value(r->body, "tern_store_writes_total");
    auto rd = prometheus_value(r->body, "tern_store_reads_total");
    if (!w || !rd) return std::nullopt;
    return StoreCounters{*w, *rd};
  }

  std::optional<lean::ProcSample> sample_server() const {
    if (opt_.server_pid <= 0) return std::nullopt;
    auto s = lean::sample_process(opt_.server_pid);
    if (!s) return std::nullopt;
    return *s;
  }

  void read_from(WorkerProc& p) {
    char buf[65536];
    const ssize_t n = ::read(p.from_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) return;
    if (n <= 0) {
      p.eof = true;
      ::close(p.from_fd);
      if (!p.has_result) report_.fatal.push_back("a worker exited without a result");
      return;
    }
    p.buf.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = p.buf.find('\n')) != std::string::npos) {
      auto line = parse_control_line(std::string_view(p.buf).substr(0, nl));
      p.buf.erase(0, nl + 1);
      if (!line) {
        report_.fatal.push_back("bad control line from a worker");
        continue;
      }
      handle(p, line->first, std::move(line->second));
    }
  }

  void handle(WorkerProc& p, char kind, json::value v) {
    switch (kind) {
      case 'P':
        p.progress = std::move(v);
        break;
      case 'B': {
        const auto* o = v.if_object();
        const auto* name = o ? o->if_contains("name") : nullptr;
        if (!name || !name->is_string()) {
          report_.fatal.push_back("bad barrier from a worker");
          return;
        }
        const auto* data = o->if_contains("data");
        p.barrier.emplace(std::string(name->as_string()), data ? *data : json::value(json::object{}));
        break;
      }
      case 'R':
        p.has_result = true;
        merge_result(v);
        break;
      case 'E': {
        const auto* o = v.if_object();
        const auto* m = o ? o->if_contains("message") : nullptr;
        report_.fatal.push_back(m && m->is_string() ? std::string(m->as_string()) : "worker error");
        break;
      }
      default:
        report_.fatal.push_back("unknown control line kind");
    }
  }

  void check_barrier() {
    std::optional<std::string> name;
    for (const auto& p : procs_) {
      if (p.eof) continue;
      if (!p.barrier) return;
      if (name && *name != p.barrier->first) {
        report_.fatal.push_back("workers disagree on the barrier: " + *name + " vs " + p.barrier->first);
        return;
      }
      name = p.barrier->first;
    }
    if (!name) return;
    std::vector<json::value> datas;
    for (auto& p : procs_) {
      if (p.eof) continue;
      datas.push_back(std::move(p.barrier->second));
      p.barrier.reset();
    }
    const json::value reply = on_barrier(*name, datas);
    const std::string line = encode_control_line('G', reply);
    for (auto& p : procs_)
      if (!p.eof) write_all(p.to_fd, line);
  }

  json::value on_barrier(const std::string& name, const std::vector<json::value>& datas) {
    const auto server = sample_server();
    if (name == "ready") {
      if (server) report_.rss_ready_kb = server->rss_kb;
      for (const auto& d : datas) report_.gen_rss_ready_kb += static_cast<int64_t>(get_num(d, "gen_rss_kb"));
      return json::object{};
    }
    if (name == "connected") {
      if (server) report_.rss_connected_kb = server->rss_kb;
      for (const auto& d : datas) {
        report_.online_after_connect += static_cast<uint64_t>(get_num(d, "online"));
        report_.gen_rss_connected_kb += static_cast<int64_t>(get_num(d, "gen_rss_kb"));
        const auto* all = d.as_object().if_contains("all");
        if (all && all->is_bool() && !all->as_bool()) report_.all_connected = false;
      }
      return json::object{};
    }
    if (name == "held") {
      if (server) report_.rss_held_kb = server->rss_kb;
      for (const auto& d : datas) {
        report_.idle_disconnects += static_cast<uint64_t>(get_num(d, "disconnects"));
        report_.idle_gen_cpu_us += static_cast<int64_t>(get_num(d, "gen_cpu_us"));
      }
      return json::object{};
    }
    if (name == "step_start") {
      if (stop_ || static_cast<int>(report_.steps.size()) >= opt_.max_steps) return json::object{{"stop", true}};
      step_rate_ = report_.steps.empty() ? opt_.rate : next_rate_;
      step_server0_ = server;
      step_store0_ = sample_store();
      return json::object{{"rate", step_rate_}};
    }
    if (name == "step_end") {
      StepSummary s;
      s.rate_target = step_rate_;
      for (const auto& d : datas) s.add_worker(d);
      if (server && step_server0_) {
        s.server_cpu_us = server->cpu_us - step_server0_->cpu_us;
        s.server_rss_kb = server->rss_kb;
        if (server->runqueue_wait_us >= 0 && step_server0_->runqueue_wait_us >= 0)
          s.server_runqueue_wait_us = server->runqueue_wait_us - step_server0_->runqueue_wait_us;
      }
      // The workers flushed their last acks at the end of the drain: give the server a moment
      // to commit them, so that they fall inside the step.
      if (step_store0_) ::usleep(300'000);
      if (const auto store = sample_store(); store && step_store0_)
        s.server_store = StoreCounters{store->writes - step_store0_->writes, store->reads - step_store0_->reads};
      const bool ok = s.sustained(opt_);
      report_.steps.push_back(std::move(s));
      if (!opt_.find_max) {
        stop_ = true;
      } else if (ok) {
        report_.max_sustained_rate = step_rate_;
        next_rate_ = step_rate_ * opt_.step_factor;
      } else {
        stop_ = true;
      }
      if (!opt_.quiet) print_step(report_.steps.back(), ok);
      return json::object{};
    }
    if (name == "posted" || name == "probe_end") {  // channel: every worker learns the posts
      json::array all;
      for (const auto& d : datas)
        if (const auto* p = d.is_object() ? d.as_object().if_contains("posts") : nullptr; p && p->is_array())
          for (const auto& e : p->as_array()) all.push_back(e);
      report_.channel_posts += all.size();
      if (name == "probe_end") {
        report_.probe_posts = all.size();
        if (const auto store = sample_store(); store && probe_store0_)
          report_.probe_store = StoreCounters{store->writes - probe_store0_->writes, store->reads - probe_store0_->reads};
      }
      json::object reply;
      reply["posts"] = std::move(all);
      return reply;
    }
    if (name == "probe_start") {
      // The workers stopped acking before this barrier; the acks they sent last may still be
      // on their way into the store. Start from a counter that stood still for 300 ms (at most
      // 10 s of waiting).
      probe_store0_ = sample_store();
      for (int i = 0; i < 33 && probe_store0_; ++i) {
        ::usleep(300'000);
        const auto again = sample_store();
        const bool still = again && again->writes == probe_store0_->writes;
        probe_store0_ = again;
        if (still) break;
      }
      return json::object{};
    }
    return json::object{};  // "storm", "queued": a common instant, nothing to decide
  }

  void merge_result(const json::value& v) {
    const auto* o = v.if_object();
    if (!o) return;
    report_.clients += static_cast<uint64_t>(get_num(v, "clients"));
    report_.online_at_end += static_cast<uint64_t>(get_num(v, "online_at_end"));
    report_.offline_subscribers += static_cast<uint64_t>(get_num(v, "offline_subscribers"));
    report_.gen_cpu_us += static_cast<int64_t>(get_num(v, "gen_cpu_us"));
    if (const auto* c = o->if_contains("counters")) report_.counters += Counters::from_json(*c);
    if (const auto* e = o->if_contains("errors")) merge_errors(report_.errors, *e);
    if (const auto* t = o->if_contains("verifier"))
      if (auto r = lean::VerifierTotals::from_json(*t)) report_.verifier.merge(*r);
  }

  void print_step(const StepSummary& s, bool ok) const {
    std::fprintf(stderr,
                 "tern-bench step %zu: target %.0f/s, sent %.0f/s, delivered %.0f/s, p50 %.2f ms, p99 %.2f ms%s\n",
                 report_.steps.size(), s.rate_target, s.sent_per_s(), s.delivered_per_s(),
                 s.latency.quantile(0.5) / 1000.0, s.latency.quantile(0.99) / 1000.0,
                 opt_.find_max ? (ok ? " (sustained)" : " (not sustained: stop)") : "");
  }

  void print_progress() {
    const int64_t now = mono_us();
    const double dt = static_cast<double>(now - last_print_us_) / 1e6;
    last_print_us_ = now;
    Counters c;
    lean::LatencyHistogram h;
    uint64_t online = 0, clients = 0, errors = 0;
    std::string phase = "setup";
    bool any = false;
    for (const auto& p : procs_) {
      if (!p.progress.is_object()) continue;
      any = true;
      const auto& o = p.progress.as_object();
      if (const auto* x = o.if_contains("counters")) c += Counters::from_json(*x);
      if (const auto* x = o.if_contains("hist"))
        if (auto r = lean::LatencyHistogram::from_json(*x)) h.merge(*r);
      if (const auto* x = o.if_contains("phase"); x && x->is_string()) phase = std::string(x->as_string());
      online += static_cast<uint64_t>(get_num(p.progress, "online"));
      clients += static_cast<uint64_t>(get_num(p.progress, "clients"));
      errors += static_cast<uint64_t>(get_num(p.progress, "errors"));
    }
    if (!any) return;
    const Counters d = c - last_progress_;
    last_progress_ = c;
    std::fprintf(stderr,
                 "[%6.1fs] %-7s online %llu/%llu  sent %llu (%.0f/s)  acked %llu  delivered %llu (%.0f/s)  "
                 "p50 %.2f ms  p99 %.2f ms  errors %llu\n",
                 static_cast<double>(now - started_us_) / 1e6, phase.c_str(), static_cast<unsigned long long>(online),
                 static_cast<unsigned long long>(clients), static_cast<unsigned long long>(c.written),
                 dt > 0 ? static_cast<double>(d.written) / dt : 0.0, static_cast<unsigned long long>(c.acked),
                 static_cast<unsigned long long>(c.delivered + c.replayed),
                 dt > 0 ? static_cast<double>(d.delivered + d.replayed) / dt : 0.0, h.quantile(0.5) / 1000.0,
                 h.quantile(0.99) / 1000.0, static_cast<unsigned long long>(errors));
  }

  void finish() {
    if (!report_.fatal.empty()) {
      for (auto& p : procs_)
        if (!p.eof) ::kill(p.pid, SIGTERM);
    }
    for (auto& p : procs_) {
      if (!p.eof) ::close(p.from_fd);
      ::close(p.to_fd);
      int status = 0;
      while (::waitpid(p.pid, &status, 0) < 0 && errno == EINTR) {
      }
      // Any other status is a failure too (e.g. a sanitizer report after the result was sent).
      if (WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0 && report_.fatal.empty()))
        report_.fatal.push_back("a worker failed (wait status " + std::to_string(status) + ")");
    }
    if (const auto last = sample_server(); last && server_first_)
      report_.server_cpu_total_us = last->cpu_us - server_first_->cpu_us;
    if (opt_.json) {
      std::printf("%s\n", json::serialize(report_.to_json()).c_str());
    } else {
      std::printf("%s", report_.table().c_str());
    }
    std::fflush(stdout);
  }

  const BenchOptions opt_;
  std::vector<WorkerProc> procs_;
  Report report_;
  int64_t started_us_ = 0;
  int64_t last_print_us_ = 0;
  Counters last_progress_;
  std::optional<lean::ProcSample> server_first_, step_server0_;
  const std::string metrics_token_;
  std::optional<StoreCounters> step_store0_, probe_store0_;
  double step_rate_ = 0;
  double next_rate_ = 0;
  bool stop_ = false;
};

}  // namespace

int run_bench(const BenchOptions& opt) {
  ::signal(SIGPIPE, SIG_IGN);
  ChannelSetup channel;
  if (opt.workload == Workload::kChannel && opt.protocol == Protocol::kMqtt) {
    channel = ChannelSetup{opt.prefix + "/ch", "", ""};  // a topic; no accounts, no channel to create
  } else if (opt.workload == Workload::kChannel) {
    // Before the fork: every worker's subscribers join this one channel.
    auto ch = create_bench_channel(opt);
    if (!ch) {
      std::fprintf(stderr, "tern-bench: set-up failed: %s\n", ch.error().message.c_str());
      if (opt.json) std::printf("%s\n", json::serialize(json::object{{"ok", false}, {"exit_code", 2},
                                                                       {"fatal", json::array{json::value(ch.error().message)}}}).c_str());
      return 2;
    }
    channel = std::move(*ch);
  }
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<WorkerProc> procs;
  for (int i = 0; i < opt.workers; ++i) {
    int to_w[2], from_w[2];
    if (::pipe2(to_w, O_CLOEXEC) != 0 || ::pipe2(from_w, O_CLOEXEC) != 0) {
      std::fprintf(stderr, "tern-bench: pipe failed\n");
      return 2;
    }
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::fprintf(stderr, "tern-bench: fork failed\n");
      return 2;
    }
    if (pid == 0) {
      for (const auto& p : procs) {
        ::close(p.from_fd);
        ::close(p.to_fd);
      }
      ::close(to_w[1]);
      ::close(from_w[0]);
      int rc;
      {
        Worker w(opt, i, to_w[0], from_w[1], channel);
        rc = w.run();
      }
      std::fflush(stderr);
      std::exit(rc);
    }
    ::close(to_w[0]);
    ::close(from_w[1]);
    WorkerProc p;
    p.pid = pid;
    p.from_fd = from_w[0];
    p.to_fd = to_w[1];
    procs.push_back(std::move(p));
  }
  Coordinator c(opt, std::move(procs), std::move(channel));
  return c.run();
}

}  // namespace tern::bench
