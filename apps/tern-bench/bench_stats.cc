#include "bench_stats.h"

#include <boost/json.hpp>

namespace tern::bench {
namespace json = boost::json;

// One list of the fields, so that arithmetic and JSON cannot drift apart.
#define TERN_BENCH_COUNTERS(X)                                                                   \
  X(scheduled) X(written) X(retransmitted) X(acked) X(send_failed) X(delivered) X(replayed)     \
  X(redelivered) X(other_messages) X(receipts) X(receipts_to_non_senders) X(ephemeral) X(acks_sent) X(connects)           \
  X(connect_failures) X(disconnects) X(synced) X(typing_sent)

Counters Counters::operator-(const Counters& o) const {
  Counters r;
#define X(f) r.f = f - o.f;
  TERN_BENCH_COUNTERS(X)
#undef X
  return r;
}

Counters& Counters::operator+=(const Counters& o) {
#define X(f) f += o.f;
  TERN_BENCH_COUNTERS(X)
#undef X
  return *this;
}

json::value Counters::to_json() const {
  json::object o;
#define X(f) o[#f] = f;
  TERN_BENCH_COUNTERS(X)
#undef X
  return o;
}

Counters Counters::from_json(const json::value& v) {
  Counters c;
  const auto* o = v.if_object();
  if (!o) return c;
  auto get = [&](std::string_view k) -> uint64_t {
    const auto* x = o->if_contains(k);
    if (!x) return 0;
    boost::system::error_code ec;
    const auto n = x->to_number<uint64_t>(ec);
    return ec ? 0 : n;
  };
#define X(f) c.f = get(#f);
  TERN_BENCH_COUNTERS(X)
#undef X
  return c;
}

json::value errors_to_json(const ErrorCounts& e) {
  json::object o;
  for (const auto& [k, n] : e) o[k] = n;
  return o;
}

void merge_errors(ErrorCounts& into, const json::value& v) {
  const auto* o = v.if_object();
  if (!o) return;
  for (const auto& kv : *o) {
    boost::system::error_code ec;
    const auto n = kv.value().to_number<uint64_t>(ec);
    if (!ec) into[std::string(kv.key())] += n;
  }
}

}  // namespace tern::bench
