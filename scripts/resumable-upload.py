#!/usr/bin/python3
# resumable-upload.py: times resumable uploads (POST /v1/media/uploads, then PUT chunks, a
# connection per request) against a running ternd (docs/benchmarks.md, "Resumable uploads
# kept in the media directory"). Registers one user (the server's --register-rate allows
# one), then per run uploads --size random bytes in --chunk byte chunks and prints the whole
# upload's time and the last chunk's (whose answer waits for the blob to be stored: hashed,
# fsynced, renamed, its owner row committed). Exit 1 on any answer but 200/201.
#
# Usage: scripts/resumable-upload.py --url http://127.0.0.1:PORT [--size 52428800]
#        [--chunk 5242880] [--runs 3]
import argparse
import http.client
import json
import os
import sys
import time
import urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--size", type=int, default=50 << 20)
    ap.add_argument("--chunk", type=int, default=5 << 20)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)

    def req(method, path, body=b"", headers=None):
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    st, body = req("POST", "/v1/users", json.dumps({"user": "upload%d" % os.getpid()}).encode(),
                   {"Content-Type": "application/json"})
    if st != 201:
        sys.exit("register: %d %s" % (st, body[:200]))
    auth = {"Authorization": "Bearer " + json.loads(body)["token"]}
    for run in range(a.runs):
        blob = os.urandom(a.size)
        st, body = req("POST", "/v1/media/uploads", json.dumps({"size": a.size}).encode(),
                       dict(auth, **{"Content-Type": "application/json"}))
        if st != 201:
            sys.exit("create: %d %s" % (st, body[:200]))
        target = "/v1/media/uploads/" + json.loads(body)["upload_id"]
        t0 = time.monotonic()
        last = 0.0
        for at in range(0, a.size, a.chunk):
            n = min(a.chunk, a.size - at)
            h = dict(auth, **{"Content-Range": "bytes %d-%d/%d" % (at, at + n - 1, a.size),
                              "Content-Type": "application/octet-stream"})
            t = time.monotonic()
            st, body = req("PUT", target, blob[at:at + n], h)
            last = time.monotonic() - t
            if st not in (200, 201):
                sys.exit("chunk at %d: %d %s" % (at, st, body[:200]))
        print("run %d: %d bytes in %d-byte chunks: %.1f ms, the last chunk %.1f ms" %
              (run, a.size, a.chunk, (time.monotonic() - t0) * 1000, last * 1000))


if __name__ == "__main__":
    main()
