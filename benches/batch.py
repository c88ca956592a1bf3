#!/usr/bin/env python3
"""Batch benchmark driver (run by benches/batch.sh against a running release gateway).

  rate  N MODEL LIMIT   submit an N-request file batch on MODEL (whose key is limited to
                        LIMIT req/s) and report the achieved rate as a share of LIMIT
  rss   N PID           submit an N-request file batch on the unlimited model, sample the
                        gateway's RSS until it completes, download the output; report the
                        RSS added over the idle gateway

Only the Python standard library; traffic goes to 127.0.0.1 only.
"""
import json
import sys
import time
import urllib.request

BASE = sys.argv[1]
KEY = "sk-bench"


def call(method, path, body=None, ctype="application/json"):
    req = urllib.request.Request(BASE + path, data=body, method=method)
    req.add_header("authorization", "Bearer " + KEY)
    if body is not None:
        req.add_header("content-type", ctype)
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read()


def upload(n, model):
    lines = "".join(
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": model, "max_tokens": 8,
                             "messages": [{"role": "user", "content": f"request {i}: say something"}]}})
        + "\n" for i in range(n))
    b = "BoUnDaRy"
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
            f"Content-Type: application/jsonl\r\n\r\n{lines}\r\n--{b}--\r\n").encode()
    f = json.loads(call("POST", "/v1/files", body, f"multipart/form-data; boundary={b}"))
    return f["id"], len(body)


def create(file_id):
    b = json.loads(call("POST", "/v1/batches", json.dumps(
        {"input_file_id": file_id, "endpoint": "/v1/chat/completions",
         "completion_window": "24h"}).encode()))
    return b["id"]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait(batch_id, on_poll=None):
    while True:
        b = json.loads(call("GET", f"/v1/batches/{batch_id}"))
        if on_poll:
            on_poll()
        if b["status"] in ("completed", "failed", "cancelled", "expired"):
            return b
        time.sleep(0.1)


def rate(n, model, limit):
    fid, _ = upload(n, model)
    t0 = time.monotonic()
    bid = create(fid)
    b = wait(bid)
    secs = time.monotonic() - t0
    counts = b["request_counts"]
    assert b["status"] == "completed" and counts["completed"] == n, b
    achieved = n / secs
    print(f"RESULT rate model={model} n={n} seconds={secs:.1f} rate={achieved:.1f} "
          f"limit={limit} share={achieved / limit * 100:.1f}%")


def rss(n, pid):
    idle = rss_kib(pid)
    fid, size = upload(n, "free")
    after_upload = rss_kib(pid)
    peak = [max(idle, after_upload)]
    t0 = time.monotonic()
    bid = create(fid)
    b = wait(bid, lambda: peak.__setitem__(0, max(peak[0], rss_kib(pid))))
    secs = time.monotonic() - t0
    assert b["status"] == "completed" and b["request_counts"]["completed"] == n, b
    out = call("GET", f"/v1/files/{b['output_file_id']}/content")
    peak[0] = max(peak[0], rss_kib(pid))
    ids = {json.loads(line)["custom_id"] for line in out.splitlines()}
    assert len(ids) == n, f"{len(ids)} distinct custom_ids in {n} lines"
    print(f"RESULT rss n={n} input_mib={size / 2**20:.1f} output_mib={len(out) / 2**20:.1f} "
          f"seconds={secs:.1f} rate={n / secs:.0f} idle_mib={idle / 1024:.1f} "
          f"peak_mib={peak[0] / 1024:.1f} added_mib={(peak[0] - idle) / 1024:.1f}")


if __name__ == "__main__":
    what = sys.argv[2]
    if what == "rate":
        rate(int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
    elif what == "rss":
        rss(int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(f"unknown: {what}")
