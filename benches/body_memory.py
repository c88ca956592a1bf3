#!/usr/bin/env python3
"""Peak memory per request body, per surface (issue 21's measure): starts the gateway
on the built-in mock (store off), sends one body of many small items per run, and
prints the gateway's peak RSS (VmHWM) over its idle RSS, as a multiple of the body
(Responses twice: store off, and stored in SQLite).

    python3 benches/body_memory.py target/release/ai-rate-limiter [MiB ...]

Loopback only (127.0.0.1:19080/19091); one gateway process per measurement."""
import json, os, shutil, subprocess, sys, tempfile, time, urllib.request

CONFIG = """auth: {enabled: false}
server: {listen: "127.0.0.1:19080", metrics_listen: "127.0.0.1:19091", max_body_bytes: 67108864}
providers: [{name: mock, kind: mock}]
models: [{name: m, deployments: [{provider: mock}]}]
responses: {store: STORE, data_dir: DATA}
"""

def status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0

def body(surface, mib):
    n = mib * 1024 * 1024
    item = {"role": "user", "content": "hello there"}
    items = [item] * (n // (len(json.dumps(item)) + 2))
    return {
        "chat": ("/v1/chat/completions", {"model": "m", "messages": items}),
        "messages": ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": items}),
        "responses": ("/v1/responses", {"model": "m", "input": items}),
        "responses (stored)": ("/v1/responses", {"model": "m", "input": items}),
        # Inputs of 1 KiB with one-dimension vectors: the mock's answer (a vector per
        # input) stays small, so the figure is the request's own.
        "embeddings": ("/v1/embeddings", {"model": "m", "dimensions": 1,
                                          "input": ["hello there " * 85] * (n // 1024)}),
    }[surface]

def main():
    binary = sys.argv[1]
    sizes = [int(a) for a in sys.argv[2:]] or [1, 8, 32]
    print("| surface | body | peak RSS over idle | × body |\n|---|---:|---:|---:|")
    for surface in ("chat", "messages", "responses", "responses (stored)", "embeddings"):
        for mib in sizes:
            data_dir = tempfile.mkdtemp()
            cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
            store = "sqlite" if surface == "responses (stored)" else "off"
            cfg.write(CONFIG.replace("STORE", store).replace("DATA", data_dir))
            cfg.close()
            p = subprocess.Popen([binary, "run", "--config", cfg.name],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1.0)
                path, b = body(surface, mib)
                data = json.dumps(b).encode()
                idle = status(p.pid, "VmRSS")
                req = urllib.request.Request("http://127.0.0.1:19080" + path, data,
                                             {"content-type": "application/json"})
                try:
                    urllib.request.urlopen(req, timeout=300).read()
                except Exception as e:  # an error answer still measures the parse
                    print(f"<!-- {surface} {mib} MiB: {e} -->")
                peak = status(p.pid, "VmHWM") - idle
                print(f"| {surface} | {mib} MiB | {peak:.0f} MiB | {peak / (len(data) / 1048576):.1f}× |")
            finally:
                p.kill()
                p.wait()
                os.unlink(cfg.name)
                shutil.rmtree(data_dir, ignore_errors=True)

if __name__ == "__main__":
    main()
