#!/usr/bin/env bash
# Prints the "Tern vs mosquitto, same generator" tables of docs/benchmarks.md from the JSON
# results of `scripts/bench.sh peers` (peers-{ternd,mosquitto}-{RATE,findmax}.json), with the
# ratios ternd / mosquitto.
#   scripts/bench-peers-table.sh [results-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - "${1:-bench-results}" <<'PY'
import glob, json, os, re, sys
d = sys.argv[1]

def load(name):
    p = os.path.join(d, name + ".json")
    if not os.path.exists(p):
        return None
    try:
        return json.load(open(p))
    except ValueError:
        return None

def f(x, nd=0):
    return "-" if x is None else f"{x:,.{nd}f}"

def ratio(a, b, nd=2):
    return "-" if a is None or b in (None, 0) else f"{a / b:.{nd}f}"

def lost(r):
    v = r["verifier"]
    return v["losses"] + v["duplicates"] + v["order_violations"] + v["seq_conflicts"] + v["foreign"] + v["echoes"]

def ok_at_100ms(r):
    s = r.get("result")
    return bool(s) and r["exit_code"] == 0 and lost(r) == 0 and s["drained"] and s["latency_ms"]["p99"] <= 100 \
        and s["sent_per_s"] >= 0.95 * s["rate_target"]

rates = sorted({int(m.group(1)) for p in glob.glob(os.path.join(d, "peers-*-*.json"))
                for m in [re.search(r"peers-(?:ternd|mosquitto)-(\d+)\.json$", p)] if m})

print("| server | offered/s | sent/s | delivered/s | p50 ms | p99 ms | p99.9 ms | server µs/delivery | "
      "server cores | server RSS MB | generator µs/delivery | verifier | exit |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
rows = {}
for rate in rates:
    for srv in ("mosquitto", "ternd"):
        r = load(f"peers-{srv}-{rate}")
        if not r or "result" not in r:
            print(f"| {srv} | {rate:,} | (no result) |||||||||||")
            continue
        s, l, v = r["result"], r["result"]["latency_ms"], r["verifier"]
        rows[(srv, rate)] = r
        rss = s.get("server_rss_kb")
        verdict = (f"{v['delivered']:,}/{v['expected_deliveries']:,} delivered, {v['losses']} lost, "
                   f"{v['duplicates']} dup, {v['order_violations']} reordered")
        print(f"| {srv} | {rate:,} | {f(s['sent_per_s'])} | {f(s['delivered_per_s'])} | {f(l['p50'],2)} | "
              f"{f(l['p99'],2)} | {f(l['p999'],2)} | {f(s['server_cpu_us_per_delivery'],1)} | "
              f"{f(s['server_cpu_util'],2)} | {f(None if rss is None else rss / 1024, 1)} | "
              f"{f(s['generator_cpu_us_per_delivery'],1)} | {verdict} | {r['exit_code']} |")
print()
print("| offered/s | server CPU per message, ternd / mosquitto | p99, ternd / mosquitto | "
      "p99 ≤ 100 ms, nothing lost: mosquitto | ternd |")
print("|---|---|---|---|---|")
for rate in rates:
    m, t = rows.get(("mosquitto", rate)), rows.get(("ternd", rate))
    if not m or not t:
        continue
    ms, ts = m["result"], t["result"]
    print(f"| {rate:,} | {ratio(ts['server_cpu_us_per_delivery'], ms['server_cpu_us_per_delivery'])} "
          f"({f(ts['server_cpu_us_per_delivery'])} / {f(ms['server_cpu_us_per_delivery'])} µs) | "
          f"{ratio(ts['latency_ms']['p99'], ms['latency_ms']['p99'], 1)} "
          f"({f(ts['latency_ms']['p99'],2)} / {f(ms['latency_ms']['p99'],2)} ms) | "
          f"{'yes' if ok_at_100ms(m) else 'no'} | {'yes' if ok_at_100ms(t) else 'no'} |")
fm_m, fm_t = load("peers-mosquitto-findmax"), load("peers-ternd-findmax")
if fm_m or fm_t:
    print()
    def best(r):
        return None if not r or "find_max" not in r else r["find_max"]["max_sustained_rate"]
    def steps(r):
        if not r:
            return "-"
        return ", ".join(f"{s['rate_target']:,.0f} (p99 {s['latency_ms']['p99']:.1f} ms, "
                         f"{s['server_cpu_us_per_delivery'] or 0:.0f} µs{'' if s['sustained'] else ', not sustained'})"
                         for s in r["steps"])
    bm, bt = best(fm_m), best(fm_t)
    print("| find-max (p99 ≤ 100 ms, nothing lost, ×1.25 steps of 10 s from 1,000/s) | mosquitto | ternd | "
          "ternd / mosquitto |")
    print("|---|---|---|---|")
    print(f"| highest sustained rate, msg/s | {f(bm)} | {f(bt)} | {ratio(bt, bm)} |")
    print()
    print(f"mosquitto steps: {steps(fm_m)}")
    print()
    print(f"ternd steps: {steps(fm_t)}")
PY
