#!/usr/bin/python3
# ternd's CPU per message with and without TLS, same load, in one run (docs/benchmarks.md,
# "TLS"), the earlier measurement, made before tern-bench had a TLS client (`scripts/bench.sh
# tls` now measures the same with tern-bench at a larger scale). This small driver: P sender/receiver
# pairs over WebSocket (wss:// or ws://), R messages/s in total for D seconds; the figure is
# ternd's utime+stime over the send phase divided by the messages received. Runs plain, TLS,
# plain, TLS, each on a fresh ternd. The test certificate comes from the openssl CLI.
# Needs Debian's python3-websocket (scripts/setup.sh installs it).
#
#   /usr/bin/python3 scripts/tls-cpu.py build/bin/ternd 20 400 20
import json, os, ssl, subprocess, sys, tempfile, threading, time, urllib.request, base64, uuid
import websocket
TERND = sys.argv[1]
P, R, D = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
PKI = tempfile.mkdtemp(prefix="tern-tlscpu-pki-")
CA, CERT, KEY = PKI + "/ca.pem", PKI + "/srv.pem", PKI + "/srv.key"
def sh(*args): subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
sh("openssl", "req", "-x509", *EC, "-days", "1", "-subj", "/CN=bench-ca", "-keyout", PKI + "/ca.key", "-out", CA)
sh("openssl", "req", *EC, "-subj", "/CN=127.0.0.1", "-keyout", KEY, "-out", PKI + "/srv.csr")
open(PKI + "/ext.cnf", "w").write("subjectAltName=IP:127.0.0.1\n")
sh("openssl", "x509", "-req", "-days", "1", "-in", PKI + "/srv.csr", "-CA", CA, "-CAkey", PKI + "/ca.key",
   "-set_serial", "1", "-extfile", PKI + "/ext.cnf", "-out", CERT)
TICK = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK
def run(tls):
    data = tempfile.mkdtemp(prefix="tern-tlsbench-")
    args = [TERND, "--listen", "127.0.0.1:0", "--data", data, "--log-level", "warn", "--send-rate", "100000",
            "--send-burst", "100000", "--register-rate", "0", "--create-rate", "0"]
    if tls: args += ["--tls-cert", CERT, "--tls-key", KEY]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    addr = p.stdout.readline().split()[1]
    scheme = "https" if tls else "http"
    ctx = ssl.create_default_context(cafile=CA) if tls else None
    def post(path, body, token=None):
        req = urllib.request.Request(f"{scheme}://{addr}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **({"Authorization": "Bearer " + token} if token else {})})
        return json.loads(urllib.request.urlopen(req, context=ctx).read())
    pairs = []
    for i in range(P):
        a = post("/v1/users", {"user": f"a{i}"}); b = post("/v1/users", {"user": f"b{i}"})
        conv = post("/v1/conversations", {"type": "direct", "members": [f"b{i}"]}, a["token"])
        pairs.append((a, b, conv.get("conversation_id") or conv.get("id")))
    ws_url = ("wss" if tls else "ws") + f"://{addr}/v1/ws?token="
    sslopt = {"ca_certs": CA} if tls else None
    received = [0]; lock = threading.Lock(); stop = [False]
    def reader(ws, count):
        while not stop[0]:
            try: m = ws.recv()
            except Exception: return
            if count and '"type":"message"' in m:
                with lock: received[0] += 1
    conns = []
    for a, b, conv in pairs:
        wa = websocket.create_connection(ws_url + a["token"], sslopt=sslopt)
        wb = websocket.create_connection(ws_url + b["token"], sslopt=sslopt)
        conns.append((wa, wb, conv))
        threading.Thread(target=reader, args=(wa, False), daemon=True).start()
        threading.Thread(target=reader, args=(wb, True), daemon=True).start()
    time.sleep(1)
    with lock: received[0] = 0
    c0 = cpu(p.pid); t0 = time.time()
    body = base64.b64encode(b"x" * 64).decode()
    def sender(ws, conv):
        n = 0; start = time.time(); per = R / P
        while time.time() - start < D:
            ws.send(json.dumps({"type": "send", "client_msg_id": uuid.uuid4().hex, "conversation_id": conv, "body": body}))
            n += 1
            delay = start + n / per - time.time()
            if delay > 0: time.sleep(delay)
    ts = [threading.Thread(target=sender, args=(wa, conv)) for wa, wb, conv in conns]
    for t in ts: t.start()
    for t in ts: t.join()
    time.sleep(0.5)  # the last deliveries
    c1 = cpu(p.pid); t1 = time.time()
    with lock: got = received[0]
    stop[0] = True
    for wa, wb, _ in conns: wa.close(); wb.close()
    p.terminate(); p.wait()
    subprocess.run(["rm", "-rf", data])
    return got, (c1 - c0), t1 - t0
for tls in (False, True, False, True):
    got, secs, wall = run(tls)
    print(f"{'tls  ' if tls else 'plain'} messages={got} server_cpu_s={secs:.2f} wall_s={wall:.1f} "
          f"cpu_us_per_msg={1e6 * secs / max(got, 1):.1f} load={open('/proc/loadavg').read().split()[0]}", flush=True)
subprocess.run(["rm", "-rf", PKI])
