#!/usr/bin/env python3
# http-bench.py: HTTP request load against a running ternd, for the HTTP handlers' own cost
# (docs/benchmarks.md, "HTTP requests in fibers"). Registers --users users (the server needs
# --register-rate 0), gives each a direct conversation with the next, then has --threads
# client threads, each on its own keep-alive connection, send --requests authenticated
# requests in all, round robin over the users: GET /v1/conversations (a token check and a
# read of the user's conversations) or, with --keys, GET /v1/keys/{user} (a token check and
# the key directory's reads; users without keys get an empty device list, nothing is taken). Prints requests per second and, for every --pid given
# (ternd, redis-server), its CPU per request, from /proc.
#
# Usage: scripts/http-bench.py --url http://127.0.0.1:PORT --pid TERND_PID [--pid REDIS_PID]
#        [--users 200] [--threads 8] [--requests 20000]
import argparse
import http.client
import json
import os
import threading
import time
import urllib.parse


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def request(conn, method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = conn.getresponse()
    data = r.read()
    return r.status, data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, action="append", default=[])
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--keys", action="store_true")
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    prefix = "hb%x" % (int(time.time() * 1000) % 0xFFFFFF)
    tokens = []
    for i in range(a.users):
        status, data = request(conn, "POST", "/v1/users", {"user": f"{prefix}u{i}"})
        if status != 201:
            raise SystemExit(f"register: {status} {data[:200]!r}")
        tokens.append(json.loads(data)["token"])
    for i in range(a.users):
        status, data = request(conn, "POST", "/v1/conversations",
                               {"type": "direct", "members": [f"{prefix}u{(i + 1) % a.users}"]}, tokens[i])
        if status not in (200, 201):
            raise SystemExit(f"conversation: {status} {data[:200]!r}")
    if a.keys:
        path_of = lambda i: f"/v1/keys/{prefix}u{(i + 1) % a.users}"
    else:
        path_of = lambda i: "/v1/conversations"
    errors = []
    per_thread = a.requests // a.threads

    def worker(t):
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        for k in range(per_thread):
            i = (t * per_thread + k) % a.users
            status, data = request(c, "GET", path_of(i), None, tokens[i])
            if status != 200:
                errors.append(f"{status} {data[:100]!r}")
                return

    before = {p: cpu_seconds(p) for p in a.pid}
    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    done = per_thread * a.threads
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, first: {errors[0]}")
    out = {"requests": done, "seconds": round(elapsed, 3), "per_second": round(done / elapsed)}
    for p in a.pid:
        out[f"cpu_us_per_request_pid{p}"] = round((cpu_seconds(p) - before[p]) / done * 1e6, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
