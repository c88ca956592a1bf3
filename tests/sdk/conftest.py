"""Starts the real gateway binary for the OpenAI SDK tests and stops it afterwards."""
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("GATEWAY_BIN", os.path.join(ROOT, "target", "debug", "ai-rate-limiter"))
KEY = "sk-proxy-test"
LIMITED_KEY = "sk-ratelimited"
QUEUED_KEY = "sk-queued"

CONFIG = f"""
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
providers:
  - {{name: mock, kind: mock}}
  - {{name: midstream, kind: mock, mock: {{cut_stream_after_tokens: 2}}}}
models:
  - {{name: gpt-4o-mini, deployments: [{{provider: mock}}]}}
  - {{name: gpt-3.5-turbo-instruct, deployments: [{{provider: mock}}]}}
  - {{name: text-embedding-3-small, deployments: [{{provider: mock}}]}}
  - {{name: meta-llama/Llama-3-8B, deployments: [{{provider: mock}}]}}
  - {{name: "ft:gpt-4o:org:x:abc", deployments: [{{provider: mock}}]}}
  - {{name: fault-inject-midstream, deployments: [{{provider: midstream}}]}}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gateway():
    if not os.path.exists(BIN):
        pytest.fail(f"gateway binary not found at {BIN}: run `cargo build` first (scripts/test.sh does)")
    tmp = tempfile.mkdtemp()
    cfg = os.path.join(tmp, "gateway.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG)
    port, mport = free_port(), free_port()
    log = open(os.path.join(tmp, "gateway.log"), "w")
    proc = subprocess.Popen(
        [BIN, "run", "--config", cfg, "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{mport}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{mport}/ready", timeout=1) as r:
                if json.load(r)["status"] == "ready":
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("gateway did not start:\n" + open(os.path.join(tmp, "gateway.log")).read())
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=30)
