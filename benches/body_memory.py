#!/usr/bin/env python3
"""Peak memory per request body, per surface (issue 21's measure): starts the gateway
on the built-in mock (store off), sends one body of many small items per run, and
prints the gateway's peak RSS (VmHWM) over its RSS after a small warm-up request of the
same surface (so what is measured is the request's own memory, not the arenas, pools and
caches the first request of any size sets up), as a multiple of the body. Responses
twice (store off, and stored in SQLite); chat also through the translated providers
(Anthropic, Gemini, Bedrock) against a fake upstream on loopback that reads the whole
body and answers in the provider's format.

    python3 benches/body_memory.py target/release/ai-rate-limiter [MiB ...]

Loopback only (127.0.0.1:19080/19091/19099); one gateway process per measurement."""
import http.server, json, os, shutil, subprocess, sys, tempfile, threading, time
import urllib.request

ANSWERS = {
    "/messages": {"id": "msg_1", "type": "message", "role": "assistant", "model": "x",
                     "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                     "usage": {"input_tokens": 1, "output_tokens": 1}},
    "generateContent": {"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]},
                                        "finishReason": "STOP"}],
                        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1,
                                          "totalTokenCount": 2}},
    "/converse": {"output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}},
                  "stopReason": "end_turn",
                  "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}},
}

class Upstream(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        answer = next(v for k, v in ANSWERS.items() if self.path.split("?")[0].endswith(k))
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

PROVIDERS = {
    "mock": "{name: p, kind: mock}",
    "anthropic": '{name: p, kind: anthropic, base_url: "http://127.0.0.1:19099", api_key: k}',
    "gemini": '{name: p, kind: gemini, base_url: "http://127.0.0.1:19099", api_key: k}',
    "bedrock": ('{name: p, kind: bedrock, region: us-east-1, base_url: "http://127.0.0.1:19099", '
                'access_key_id: AKIDEXAMPLE, secret_access_key: secret}'),
}

CONFIG = """auth: {enabled: false}
server: {listen: "127.0.0.1:19080", metrics_listen: "127.0.0.1:19091", max_body_bytes: 67108864}
providers: [PROVIDER]
models: [{name: m, deployments: [{provider: p, model: m}]}]
responses: {store: STORE, data_dir: DATA}
"""

def status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0

def body(surface, mib):
    n = int(mib * 1024 * 1024)
    item = {"role": "user", "content": "hello there"}
    items = [item] * (n // (len(json.dumps(item)) + 2))
    return {
        "chat": ("/v1/chat/completions", {"model": "m", "messages": items}),
        "chat → anthropic": ("/v1/chat/completions", {"model": "m", "messages": items}),
        "chat → gemini": ("/v1/chat/completions", {"model": "m", "messages": items}),
        "chat → bedrock": ("/v1/chat/completions", {"model": "m", "messages": items}),
        "messages": ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": items}),
        "responses": ("/v1/responses", {"model": "m", "input": items}),
        "responses (stored)": ("/v1/responses", {"model": "m", "input": items}),
        # Inputs of 1 KiB with one-dimension vectors: the mock's answer (a vector per
        # input) stays small, so the figure is the request's own.
        "embeddings": ("/v1/embeddings", {"model": "m", "dimensions": 1,
                                          "input": ["hello there " * 85] * (n // 1024)}),
    }[surface]

def send(surface, mib):
    path, b = body(surface, mib)
    data = json.dumps(b).encode()
    req = urllib.request.Request("http://127.0.0.1:19080" + path, data,
                                 {"content-type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=300).read()
    except Exception as e:  # an error answer still measures the parse
        print(f"<!-- {surface} {mib} MiB: {e} -->")
    return data

def main():
    binary = sys.argv[1]
    sizes = [int(a) for a in sys.argv[2:]] or [1, 8, 32]
    print("| surface | body | peak RSS over idle | × body |\n|---|---:|---:|---:|")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 19099), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    surfaces = ("chat", "chat → anthropic", "chat → gemini", "chat → bedrock", "messages",
                "responses", "responses (stored)", "embeddings")
    for surface in surfaces:
        provider = surface.split(" → ")[1] if " → " in surface else "mock"
        for mib in sizes:
            data_dir = tempfile.mkdtemp()
            cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
            store = "sqlite" if surface == "responses (stored)" else "off"
            cfg.write(CONFIG.replace("STORE", store).replace("DATA", data_dir)
                      .replace("PROVIDER", PROVIDERS[provider]))
            cfg.close()
            p = subprocess.Popen([binary, "run", "--config", cfg.name],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1.0)
                send(surface, 0.01)  # warm-up: one small request of the same surface
                time.sleep(0.2)
                idle = status(p.pid, "VmRSS")
                data = send(surface, mib)
                peak = status(p.pid, "VmHWM") - idle
                print(f"| {surface} | {mib} MiB | {peak:.0f} MiB | {peak / (len(data) / 1048576):.1f}× |")
            finally:
                p.kill()
                p.wait()
                os.unlink(cfg.name)
                shutil.rmtree(data_dir, ignore_errors=True)

if __name__ == "__main__":
    main()
