"""Starts the real gateway binary for the OpenAI SDK tests and stops it afterwards."""
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("GATEWAY_BIN", os.path.join(ROOT, "target", "debug", "ai-rate-limiter"))
KEY = "sk-proxy-test"
ANTHROPIC_KEY = "sk-ant-sdk-fixture"
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "anthropic")
LIMITED_KEY = "sk-ratelimited"
QUEUED_KEY = "sk-queued"
BUDGET_KEY = "sk-budget"

ADMIN_KEY = "sdk-admin-key-0123456789"
ADMIN = {}
CONFIG = f"""
admin:
  keys: [{{id: sdk, key: "{ADMIN_KEY}"}}]
  data_dir: admin-data
server: {{threads: 2}}
consumers:
  - {{name: sdk, keys: ["{KEY}"]}}
  - name: limited
    keys: ["{LIMITED_KEY}"]
    limits:
      - {{name: burst, req: {{rate: 2, burst: 0, nodelay: true}}}}
      - {{name: rpm, count: {{count: 1000, time_window: 60s}}}}
      - {{name: tpm, tokens: {{limit: 1000000, time_window: 60s}}}}
  - name: queued
    keys: ["{QUEUED_KEY}"]
    limits:
      - {{name: burst, req: {{rate: 4, burst: 0, nodelay: true}}, on_limit: queue, max_wait: 10s}}
  - name: budget
    keys: ["{BUDGET_KEY}"]
    limits:
      - {{name: daily, spend: {{limit_usd: 0.01, time_window: 24h}}}}
providers:
  - {{name: mock, kind: mock}}
  - {{name: midstream, kind: mock, mock: {{cut_stream_after_tokens: 2}}}}
  - {{name: slow-mock, kind: mock, mock: {{latency_ms: 300}}}}
  - {{name: claude, kind: anthropic, base_url: "{{anthropic_base}}", api_key: "{ANTHROPIC_KEY}"}}
  # The gateway itself as an OpenAI-compatible upstream: surfaces translated over real HTTP.
  - {{name: loop, kind: openai-compatible, base_url: "{{self_base}}", api_key: "{KEY}"}}
models:
  - {{name: gpt-4o-mini, deployments: [{{provider: mock}}]}}
  - {{name: gpt-3.5-turbo-instruct, deployments: [{{provider: mock}}]}}
  - {{name: text-embedding-3-small, deployments: [{{provider: mock}}]}}
  - {{name: meta-llama/Llama-3-8B, deployments: [{{provider: mock}}]}}
  - {{name: "ft:gpt-4o:org:x:abc", deployments: [{{provider: mock}}]}}
  - {{name: fault-inject-midstream, deployments: [{{provider: midstream}}]}}
  - {{name: slow-batch, deployments: [{{provider: slow-mock}}]}}
  - {{name: claude-text, deployments: [{{provider: claude}}]}}
  - {{name: claude-tool, deployments: [{{provider: claude}}]}}
  - {{name: claude-overloaded, deployments: [{{provider: claude}}]}}
  - {{name: claude-ratelimited, deployments: [{{provider: claude}}]}}
  - {{name: via-http, deployments: [{{provider: loop, model: gpt-4o-mini}}]}}
  - {{name: priced, price: {{input: 0, output: 1000}}, deployments: [{{provider: mock}}]}}
"""


def fixture_text(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


class AnthropicFixtures(BaseHTTPRequestHandler):
    """Anthropic's Messages API replaying tests/fixtures/anthropic (as the Rust tests do)."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=()):
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def events(self, sse):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for event in sse.split("\n\n"):
            if event.strip():
                data = (event + "\n\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                time.sleep(0.01)
        self.wfile.write(b"0\r\n\r\n")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.headers.get("x-api-key") != ANTHROPIC_KEY or self.path != "/v1/messages":
            return self.reply(401, '{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}')
        model, stream = body.get("model"), body.get("stream", False)
        if model == "claude-ratelimited":
            return self.reply(429, fixture_text("error_rate_limit.json"), [("retry-after", "1")])
        if model == "claude-overloaded" and not stream:
            return self.reply(529, fixture_text("error_overloaded.json"))
        name = {"claude-text": "text", "claude-tool": "tool_use", "claude-overloaded": "overloaded"}.get(model)
        if name is None:
            return self.reply(404, fixture_text("error_not_found.json"))
        if stream:
            return self.events(fixture_text(f"stream_{name}.sse"))
        return self.reply(200, fixture_text(f"message_{name}.json"))


@pytest.fixture(scope="session")
def anthropic_upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), AnthropicFixtures)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gateway(tmp, anthropic_upstream):
    """Start the gateway on fresh ports: (process, port, "") when ready, (None, 0, log)
    when it exited or did not get ready in 30 s."""
    cfg = os.path.join(tmp, "gateway.yaml")
    port, mport = free_port(), free_port()
    with open(cfg, "w") as f:
        f.write(CONFIG.replace("{anthropic_base}", anthropic_upstream)
                .replace("{self_base}", f"http://127.0.0.1:{port}/v1"))
    log_path = os.path.join(tmp, "gateway.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [BIN, "run", "--config", cfg, "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{mport}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{mport}/ready", timeout=1) as r:
                if json.load(r)["status"] == "ready":
                    ADMIN["base"] = f"http://127.0.0.1:{mport}"
                    return proc, port, ""
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            proc.wait()
            return None, 0, open(log_path).read()
        time.sleep(0.05)


@pytest.fixture(scope="session")
def gateway(anthropic_upstream):
    if not os.path.exists(BIN):
        pytest.fail(f"gateway binary not found at {BIN}: run `cargo build` first (scripts/test.sh does)")
    tmp = tempfile.mkdtemp()
    # A free port can be taken before the gateway binds it: it then exits saying the
    # address is in use, and starts again on fresh ports (up to five times).
    for _ in range(5):
        proc, port, log_text = start_gateway(tmp, anthropic_upstream)
        if proc is not None:
            break
        if "in use" not in log_text:
            pytest.fail("gateway did not start:\n" + log_text)
    else:
        pytest.fail("gateway could not bind free ports five times:\n" + log_text)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def admin_base(gateway):
    """The gateway's admin listener (the Admin API, with ADMIN_KEY)."""
    return ADMIN["base"]
