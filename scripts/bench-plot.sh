#!/usr/bin/env bash
# Plots latency against throughput from the sweep results of scripts/bench.sh (pairs, 1,000
# clients, one run per offered rate) into docs/bench-latency-throughput.png.
#   scripts/bench-plot.sh [results-dir] [output.png]
set -euo pipefail
cd "$(dirname "$0")/.."
IN=${1:-bench-results}
PNG=${2:-docs/bench-latency-throughput.png}
DAT=$(mktemp)
trap 'rm -f "$DAT"' EXIT
python3 - "$IN" >"$DAT" <<'PY'
import glob, json, sys
rows = []
for f in glob.glob(sys.argv[1] + "/sweep-*.json"):
    r = json.load(open(f))["result"]
    lat = r["latency_ms"]
    rows.append((r["rate_target"], r["delivered_per_s"], lat["p50"], lat["p99"], lat["p999"],
                 r.get("server_cpu_us_per_delivery") or 0, r["generator_cpu_us_per_delivery"]))
for row in sorted(rows):
    print(" ".join(f"{x:.3f}" for x in row))
PY
[ -s "$DAT" ] || { echo "no sweep-*.json in $IN" >&2; exit 2; }
gnuplot <<GP
set terminal pngcairo size 900,560 font "sans,10"
set output "$PNG"
set title "tern-bench pairs: 1,000 clients (500 pairs), 100-byte bodies, durability sync, 2 shared cores"
set xlabel "delivered messages per second (sustained during the send phase)"
set ylabel "send -> deliver latency (ms)"
set logscale y
set grid
set key top left
set label 1 "one 15 s run per offered rate, fresh server each; open-loop, latency from the intended send time" at graph 0.02, graph 0.72 font ",8"
set y2label "server CPU per delivered message (us)"
set y2tics
set ytics nomirror
plot "$DAT" using 2:3 with linespoints lw 2 title "p50", \
     "$DAT" using 2:4 with linespoints lw 2 title "p99", \
     "$DAT" using 2:5 with linespoints lw 1 dt 2 title "p99.9", \
     "$DAT" using 2:6 axes x1y2 with linespoints lw 1 dt 3 title "server CPU us/msg (right)", \
     "$DAT" using 2:4:(sprintf("%d/s offered", \$1)) with labels offset 1.2,0.6 left font ",8" notitle
GP
echo "wrote $PNG"
