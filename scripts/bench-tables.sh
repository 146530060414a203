#!/usr/bin/env bash
# Prints the Markdown tables of docs/benchmarks.md from the JSON results of scripts/bench.sh.
#   scripts/bench-tables.sh [results-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - "${1:-bench-results}" <<'PY'
import json, os, sys
d = sys.argv[1]

def load(name):
    p = os.path.join(d, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None

def f(x, nd=0):
    return "-" if x is None else f"{x:,.{nd}f}"

def step_row(label, s):
    l, a = s["latency_ms"], s["ack_latency_ms"]
    return (f"| {label} | {f(s['rate_target'])} | {f(s['sent_per_s'])} | {f(s['delivered_per_s'])} | "
            f"{f(l['p50'],2)} | {f(l['p90'],2)} | {f(l['p99'],2)} | {f(l['p999'],2)} | {f(a['p99'],2)} | "
            f"{f(s['server_cpu_us_per_delivery'])} | {f(s['server_cpu_util'],2)} | "
            f"{f(s['generator_cpu_us_per_delivery'])} | {f(s['generator_cpu_util'],2)} | "
            f"{'yes' if s['sustained'] else 'no'} |")

HEAD = ("| run | offered/s | sent/s | delivered/s | p50 ms | p90 ms | p99 ms | p99.9 ms | ack p99 ms | "
        "server µs/delivery | server cores | generator µs/delivery | generator cores | sustained |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")

def verdict(r):
    v = r["verifier"]
    return (f"exit {r['exit_code']}; verifier: {v['acked']:,} acknowledged, {v['delivered']:,}/{v['expected_deliveries']:,} "
            f"deliveries, {v['redelivered']:,} redelivered, {v['duplicates']} duplicates, "
            f"{v['order_violations']} order violations, {v['losses']} lost")

print("### pairs\n")
print(HEAD)
for name in ["pairs-8000", "pairs-2000"]:
    r = load(name)
    if r: print(step_row(name, r["steps"][-1]))
for name in ["pairs-8000", "pairs-2000"]:
    r = load(name)
    if r: print(f"\n{name}: {verdict(r)}")

for name in ["pairs-findmax", "pairs-findmax-100ms"]:
    r = load(name)
    if not r: continue
    print(f"\n### {name} (p99 bound {r['find_max']['p99_bound_ms']} ms): highest sustained "
          f"{f(r['find_max']['max_sustained_rate'])} msg/s\n")
    print(HEAD)
    for i, s in enumerate(r["steps"]):
        print(step_row(f"step {i+1}", s))
    print(f"\n{verdict(r)}")

rows = []
for fn in os.listdir(d):
    if fn.startswith("sweep-") and fn.endswith(".json"):
        r = json.load(open(os.path.join(d, fn)))
        rows.append((r["steps"][-1]["rate_target"], r))
if rows:
    print("\n### sweep (fresh server per point)\n")
    print(HEAD)
    for _, r in sorted(rows, key=lambda x: x[0]):
        print(step_row(f"{f(r['steps'][-1]['rate_target'])}/s", r["steps"][-1]))
    bad = [r for _, r in rows if r["exit_code"] != 0]
    print(f"\nall {len(rows)} sweep runs: " + ("exit 0, verifier clean" if not bad else f"{len(bad)} with non-zero exit"))

print("\n### group and broadcast\n")
print(HEAD + "")
for name in ["group", "broadcast-101", "broadcast-1001"]:
    r = load(name)
    if r: print(step_row(name, r["steps"][-1]))
print()
for name in ["group", "broadcast-101", "broadcast-1001"]:
    r = load(name)
    if not r: continue
    c = r["counters"]
    print(f"- {name}: {verdict(r)}; {c['receipts']:,} receipts ({c['receipts_to_non_senders']:,} to devices that sent "
          f"nothing in that conversation), {c['acks_sent']:,} acks, {c['disconnects']:,} disconnects "
          f"{dict(r['errors']) if r['errors'] else ''}")

print("\n### idle\n")
print("| run | connections | workers | server RSS before → after | server bytes/connection | "
      "generator bytes/connection | generator CPU while held | dropped |\n|---|---|---|---|---|---|---|---|")
for name in ["idle-19000", "idle-1000"]:
    r = load(name)
    if not r: continue
    i = r["idle"]
    print(f"| {name} | {i['connections']:,} | {r['workers']} | {i['server_rss_kb_before']/1024:.1f} → "
          f"{i['server_rss_kb_after']/1024:.1f} MB | {f(i['server_bytes_per_connection'])} | "
          f"{f(i.get('generator_bytes_per_connection'))} | {i['generator_cpu_s_while_held']:.2f} s / {i['held_s']:.0f} s | "
          f"{i['disconnects_while_held']} |")

r = load("offline-drain")
if r:
    s = r["steps"][-1]
    print(f"\n### offline-drain\n\n{s['replayed']:,} queued messages (100 per offline receiver, 500 receivers) "
          f"replayed in {s['replay_s']:.2f} s = {f(s['replay_per_s'])} msg/s until every receiver had `synced`; "
          f"queueing ran at {f(s['sent_per_s'])} sends/s with ack p99 {s['ack_latency_ms']['p99']:.1f} ms; "
          f"server {f(s['server_cpu_us_per_delivery'])} µs per message over the step; {verdict(r)}.")

print("\n### reconnect-storm\n")
print("| run | clients | workers | all `synced` again after | p50 / p99 / p99.9 ms over the step | retransmitted | "
      "redelivered | verdict |\n|---|---|---|---|---|---|---|---|")
for name in ["reconnect-storm-1000", "reconnect-storm-10000"]:
    r = load(name)
    if not r: continue
    s = r["steps"][-1]
    l = s["latency_ms"]
    print(f"| {name} | {r['clients']:,} | {r['workers']} | {s['reconnect_s']:.2f} s | {l['p50']:.2f} / {l['p99']:.2f} / "
          f"{l['p999']:.2f} | {s['retransmitted']} | {s['redelivered']} | exit {r['exit_code']}, "
          f"{r['verifier']['losses']} lost, {r['verifier']['duplicates']} dup, {r['verifier']['order_violations']} order |")
PY
