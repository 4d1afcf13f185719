"""Starts real `owl serve` processes (the built binary) on free loopback ports.

The binary is target/release/owl (or $OWL_BIN); the model is
smollm2-135m-instruct (the fastest; not the default), which `scripts/test` pulls into the model cache.
"""

import http.client
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import rawhttp
import pytest

ROOT = Path(__file__).resolve().parents[2]
OWL = os.environ.get("OWL_BIN", str(ROOT / "target" / "release" / "owl"))
MODEL = "smollm2-135m-instruct"
# The session server also serves /v1/embeddings with it (tests/py/test_embeddings.py).
EMBED_MODEL = "nomic-embed-text-v1.5"
PARALLEL = 4
CTX = 4096


def stream_text(url, body, path="/v1/chat/completions", headers=None, timeout=300):
    """POSTs a streaming request and reads its SSE to `data: [DONE]`: the text
    (chat deltas' content, or completions' text) and the response headers.
    Fails on an error chunk or a stream that ends without [DONE]."""
    text = ""
    with rawhttp.stream("POST", url + path, json=body, headers=headers, timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                return text, r.headers
            chunk = json.loads(data)
            assert "error" not in chunk, chunk
            for ch in chunk["choices"]:
                text += ch.get("text") or (ch.get("delta") or {}).get("content") or ""
    raise AssertionError("stream ended without [DONE]")



def models_dir():
    home = os.environ.get("OWL_HOME")
    if home:
        return Path(home) / "models"
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache) if cache and Path(cache).is_absolute() else Path.home() / ".cache"
    return base / "owl" / "models"


def fresh_home(tmp_path_factory, name):
    """An OWL_HOME of its own (so its ledger holds only its test's requests), models linked."""
    home = tmp_path_factory.mktemp(name)
    (home / "models").symlink_to(models_dir())
    return home


def ledger_path(home):
    """The ledger file records are appended to, under an OWL_HOME."""
    return home / "ledger" / "ledger.jsonl"


def ledger_records(home):
    """Every record of home's current ledger file (each line must parse)."""
    path = ledger_path(home)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Server:
    """One `owl serve` process; `url` is its base URL, `log` its stderr so far."""

    def __init__(self, *args, env=None, port=0, wrap=()):
        """`wrap`: a command the server is exec'd through (it keeps the server's pid)."""
        if not Path(OWL).exists():
            raise RuntimeError(f"{OWL} is missing: run `cargo build --release` first")
        cmd = [*wrap, OWL, "serve", "--model", MODEL, "--host", "127.0.0.1", "--port", str(port), *args]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.log = []
        self.url = None
        listening = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"listening on (http://\S+)", line)
                if m and not self.url:
                    self.url = m.group(1)
                    listening.set()
            listening.set()

        threading.Thread(target=read, daemon=True).start()
        if not listening.wait(60) or not self.url:
            self.stop()
            raise RuntimeError(f"owl serve did not start: {''.join(self.log)}")
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"owl serve exited with {self.proc.returncode}: {''.join(self.log)}")
            try:
                if rawhttp.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"owl serve never became healthy: {''.join(self.log)}")

    def metrics(self, headers=None):
        """The Prometheus samples without labels, as a dict of floats."""
        text = rawhttp.get(self.url + "/metrics", headers=headers, timeout=10).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def server():
    s = Server("--ctx", str(CTX), "--parallel", str(PARALLEL), "--embedding-model", EMBED_MODEL)
    yield s
    s.stop()
    assert s.proc.returncode is not None


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
