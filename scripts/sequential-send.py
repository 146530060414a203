#!/usr/bin/python3
# sequential-send.py: clients that wait for each `sent` before their next send (a bot, a
# bridge, a script), against a running ternd: what a commit-bound sequence gets
# (docs/benchmarks.md, "The commit gap and a client that waits for each sent"). tern-bench's
# workloads are open loop and cannot show it.
#
# Registers --senders users (the server needs --register-rate 0), each with a direct
# conversation with a partner of its own that never connects (so no delivery, ack or
# receipt joins the sender's commits). Each sender, on its own WebSocket connection and
# thread, sends --messages messages one at a time, each after the `sent` of the one before.
# Prints messages per second per sender, the send -> sent latency (p50, p99), and, for every
# --pid given (ternd, redis-server), its CPU per message, from /proc. Exit 1 if a send got
# anything but `sent` (an error frame) or a `sent` for another message. With --media N, each
# sender first uploads N blobs of 1,000 bytes and names all of them in every send (the send's
# media check, and in Redis mode its leases on them: docs/benchmarks.md).
#
# Usage: scripts/sequential-send.py --url http://127.0.0.1:PORT [--senders 1]
#        [--messages 2000] [--media 0] [--pid TERND_PID] [--pid REDIS_PID]
import argparse
import base64
import http.client
import json
import os
import socket
import threading
import time
import urllib.parse

import websocket  # Debian's python3-websocket, which scripts/setup.sh installs


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def request(conn, method, path, body, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    conn.request(method, path, body=json.dumps(body), headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


def upload(conn, token):
    conn.request("POST", "/v1/media", body=os.urandom(1000),
                 headers={"Content-Type": "application/octet-stream", "Authorization": "Bearer " + token})
    r = conn.getresponse()
    data = r.read()
    if r.status != 201:
        raise SystemExit(f"upload: {r.status} {data[:200]!r}")
    return json.loads(data)["media_id"]


def sender(host, port, token, conv, count, media, out):
    ws = websocket.create_connection(f"ws://{host}:{port}/v1/ws?token=" + urllib.parse.quote(token), timeout=30)
    ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while json.loads(ws.recv()).get("type") != "synced":
        pass
    body = base64.b64encode(b"x" * 100).decode()
    latencies = []
    t0 = time.perf_counter()
    for i in range(count):
        cmid = f"s{i}"
        start = time.perf_counter()
        frame = {"type": "send", "client_msg_id": cmid, "conversation_id": conv, "body": body}
        if media:
            frame["media"] = media
        ws.send(json.dumps(frame))
        while True:
            f = json.loads(ws.recv())
            if f.get("type") in ("sent", "error"):
                break
        if f.get("type") != "sent" or f.get("client_msg_id") != cmid:
            out["error"] = f"message {i}: {f}"
            return
        latencies.append(time.perf_counter() - start)
    out["seconds"] = time.perf_counter() - t0
    out["latencies"] = latencies


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--senders", type=int, default=1)
    ap.add_argument("--messages", type=int, default=2000, help="per sender")
    ap.add_argument("--media", type=int, default=0, help="blobs each sender names in every send")
    ap.add_argument("--pid", type=int, action="append", default=[], help="report this process's CPU per message")
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    prefix = "seq" + os.urandom(4).hex()
    tokens, convs = [], []
    for i in range(a.senders):
        for who in ("s", "p"):
            status, data = request(conn, "POST", "/v1/users", {"user": f"{prefix}{who}{i}"})
            if status != 201:
                raise SystemExit(f"register: {status} {data[:200]!r}")
            if who == "s":
                tokens.append(json.loads(data)["token"])
        status, data = request(conn, "POST", "/v1/conversations",
                               {"type": "direct", "members": [f"{prefix}p{i}"]}, tokens[i])
        if status not in (200, 201):
            raise SystemExit(f"conversation: {status} {data[:200]!r}")
        convs.append(json.loads(data)["conversation_id"])
    media = [[upload(conn, tokens[i]) for _ in range(a.media)] for i in range(a.senders)]
    outs = [{} for _ in range(a.senders)]
    threads = [threading.Thread(target=sender, args=(u.hostname, u.port, tokens[i], convs[i], a.messages, media[i], outs[i]))
               for i in range(a.senders)]
    cpu0 = {p: cpu_seconds(p) for p in a.pid}
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu1 = {p: cpu_seconds(p) for p in a.pid}
    failed = [o["error"] for o in outs if "error" in o]
    if failed or any("seconds" not in o for o in outs):
        print("FAILED:", failed or "a sender did not finish")
        raise SystemExit(1)
    lat = sorted(x for o in outs for x in o["latencies"])
    total = len(lat)
    rates = [a.messages / o["seconds"] for o in outs]
    cpu = " ".join(f"pid {p}: {(cpu1[p] - cpu0[p]) * 1e6 / total:.0f} us/msg" for p in a.pid)
    print(f"senders {a.senders} media {a.media} messages {total}: per sender {min(rates):.0f}-{max(rates):.0f} msg/s, "
          f"sent p50 {lat[total // 2] * 1e3:.2f} ms p99 {lat[min(total - 1, total * 99 // 100)] * 1e3:.2f} ms"
          + (f" | {cpu}" if cpu else ""))


if __name__ == "__main__":
    main()
