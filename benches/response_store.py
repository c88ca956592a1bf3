#!/usr/bin/env python3
"""The Responses store under one heavy tenant (issue 21, items 1 and 4).

    python3 benches/response_store.py BINARY [STORED] [--redis]

1. Another consumer's latency: bob's chat requests (sequential, median and p99) with an
   empty store, then while alice writes into it, then while alice holds STORED responses
   (default 300000) and keeps writing more. The store does constant work per put (a
   running total per consumer), so the last two should be close: what alice holds must
   not matter (the second shows what her writing itself costs on a shared CPU).
2. Reads that parse only what they return: alice stores one 9 MiB input, then four
   concurrent `input_items?limit=1` reads; the gateway's peak RSS rise is printed.

SQLite by default; `--redis` uses a redis-server (from PATH) on a free port. Loopback
only; everything started is stopped at the end."""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

CONFIG = """auth: {{enabled: true}}
server: {{listen: "127.0.0.1:{port}", metrics_listen: "127.0.0.1:{mport}", max_body_bytes: 33554432}}
consumers:
  - {{name: alice, keys: [sk-alice]}}
  - {{name: bob, keys: [sk-bob]}}
providers: [{{name: mock, kind: mock, mock: {{completion_tokens: 4}}}}]
models: [{{name: m, deployments: [{{provider: mock}}]}}]
responses: {{store: {store}, data_dir: "{data}", consumer_quota_bytes: 4294967296}}
{limits}"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def call(port, path, key, body=None, method=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data, method=method,
                                 headers={"authorization": f"Bearer {key}",
                                          "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def latencies(port, n=300):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        call(port, "/v1/chat/completions", "sk-bob",
             {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.99) - 1]


def fill(port, n, threads=16):
    left = [n]
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            call(port, "/v1/responses", "sk-alice", {"model": "m", "input": "x" * 200})

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def while_writing(port):
    """Bob's latencies while alice writes 2,000 more responses from 4 threads."""
    writer = threading.Thread(target=fill, args=(port, 2000, 4))
    writer.start()
    med, p99 = latencies(port)
    writer.join()
    return f"median {med:.2f} ms, p99 {p99:.2f} ms"


def rss(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    binary, stored = args[0], int(args[1]) if len(args) > 1 else 300_000
    use_redis = "--redis" in sys.argv
    port, mport = free_port(), free_port()
    data = tempfile.mkdtemp()
    procs = []
    limits = ""
    if use_redis:
        rport = free_port()
        procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--save", "",
                                       "--appendonly", "no"], stdout=subprocess.DEVNULL))
        limits = f"limits: {{policy: redis, redis: {{url: \"redis://127.0.0.1:{rport}\"}}}}\n"
        time.sleep(0.5)
    cfg = os.path.join(data, "gateway.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(port=port, mport=mport, data=data,
                              store="redis" if use_redis else "sqlite", limits=limits))
    gw = subprocess.Popen([binary, "run", "--config", cfg], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    procs.append(gw)
    try:
        time.sleep(1.5)
        store = "redis" if use_redis else "sqlite"
        med, p99 = latencies(port)
        print(f"store: {store}\nbob, empty store: median {med:.2f} ms, p99 {p99:.2f} ms")
        print("bob, alice writing into an empty store: " + while_writing(port))
        t = time.time()
        fill(port, stored)
        print(f"alice stored {stored} responses in {time.time() - t:.0f} s")
        print(f"bob, alice holding {stored} and writing: " + while_writing(port))
        item = {"role": "user", "content": "hello there"}
        big = [item] * (9 * 1024 * 1024 // 42)
        r = call(port, "/v1/responses", "sk-alice", {"model": "m", "input": big})
        time.sleep(0.5)
        with open(f"/proc/{gw.pid}/clear_refs", "w") as f:
            f.write("5")  # resets the peak (VmHWM) to the current RSS
        base = rss(gw.pid, "VmHWM")
        ts = [threading.Thread(target=call, args=(
            port, f"/v1/responses/{r['id']}/input_items?limit=1", "sk-alice"))
            for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        print(f"4 concurrent input_items?limit=1 on a 9 MiB stored input: peak RSS "
              f"+{rss(gw.pid, 'VmHWM') - base:.0f} MiB")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
