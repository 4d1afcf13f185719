"""Running owl behind a load balancer: vLLM's gauges in /metrics, and the
graceful drain on SIGTERM (health 503, new requests 503, in-flight requests
finish, exit 0; a drain that runs out of time cuts streams visibly)."""

import json
import re
import signal
import threading
import time

import rawhttp
from conftest import Server


def vllm_gauges(url):
    """vllm:* samples as {name: (labels, value)}."""
    text = rawhttp.get(url + "/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"(vllm:[a-z_]+)\{(.*)\} (\S+)", line)
        if m:
            out[m.group(1)] = (m.group(2), float(m.group(3)))
    return out


class Stream(threading.Thread):
    """Reads one SSE completion stream; `started` is set at its first token chunk."""

    def __init__(self, url, max_tokens):
        super().__init__(daemon=True)
        self.url, self.max_tokens = url, max_tokens
        self.started = threading.Event()
        self.chunks, self.done, self.error = [], False, None

    def run(self):
        body = {"prompt": "Once upon a time", "max_tokens": self.max_tokens, "ignore_eos": True,
                "temperature": 0, "stream": True}
        try:
            with rawhttp.stream("POST", self.url + "/v1/completions", json=body, timeout=120) as r:
                assert r.status_code == 200, r.read()
                for line in r.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: "):]
                    if data == "[DONE]":
                        self.done = True
                        break
                    self.chunks.append(json.loads(data))
                    self.started.set()
        except Exception as e:  # a cut connection: what the client sees
            self.error = e
        self.started.set()


def test_metrics_export_vllm_gauges(server):
    g = vllm_gauges(server.url)
    assert set(g) >= {"vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"}, g
    loaded = rawhttp.get(server.url + "/v1/models", timeout=10).json()["data"][0]["id"]
    for labels, value in g.values():
        assert labels == f'model_name="{loaded}"' and value >= 0, g
    s = Stream(server.url, 300)
    s.start()
    assert s.started.wait(60) and not s.error, s.error
    busy = vllm_gauges(server.url)
    owl = server.metrics()
    s.join(120)
    assert s.done, (s.error, len(s.chunks))
    # While a stream decodes it is running and holds KV pages; the gauges agree with owl's own.
    assert busy["vllm:num_requests_running"][1] >= 1, busy
    assert 0 < busy["vllm:kv_cache_usage_perc"][1] <= 1, busy
    assert owl["owl_kv_pages_total"] > 0
    idle = vllm_gauges(server.url)
    deadline = time.time() + 10
    while idle["vllm:num_requests_running"][1] and time.time() < deadline:
        time.sleep(0.1)
        idle = vllm_gauges(server.url)
    assert idle["vllm:num_requests_running"][1] == 0, idle
    assert idle["vllm:num_requests_waiting"][1] == 0, idle


def wait_for(pred, secs=20):
    deadline = time.time() + secs
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_sigterm_drains_in_flight_then_exits_0():
    srv = Server("--ctx", "1024", "--parallel", "2", "--drain-seconds", "60")
    try:
        s = Stream(srv.url, 400)
        s.start()
        assert s.started.wait(60) and not s.error, s.error
        srv.proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: any("draining" in l for l in srv.log)), srv.log
        # The stream was still running when the drain began.
        assert any("draining: 1 request(s) in flight" in l for l in srv.log), srv.log
        h = rawhttp.get(srv.url + "/health", timeout=10)
        assert h.status_code == 503 and h.json()["error"]["code"] == "draining", h.text
        r = rawhttp.post(srv.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 4}, timeout=10)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "draining" and int(r.headers["retry-after"]) > 0, r.headers
        s.join(120)
        assert s.done and s.error is None, (s.error, len(s.chunks))
        assert s.chunks[-1]["choices"][0]["finish_reason"] == "length", s.chunks[-1]
        n = sum(1 for c in s.chunks if c["choices"] and c["choices"][0].get("text"))
        assert n > 0
        assert srv.proc.wait(30) == 0, srv.log
        assert any("drained; exiting" in l for l in srv.log), srv.log
    finally:
        srv.stop()


def test_drain_time_up_cuts_streams_without_done():
    srv = Server("--ctx", "4096", "--parallel", "2", "--drain-seconds", "1")
    try:
        s = Stream(srv.url, 3000)
        s.start()
        assert s.started.wait(60) and not s.error, s.error
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0, srv.log
        s.join(30)
        # Cut mid-way: the client never sees [DONE] or a finish_reason, so it cannot mistake it for complete.
        assert not s.done, len(s.chunks)
        assert all(c["choices"][0]["finish_reason"] is None for c in s.chunks if c["choices"])
        assert any("still in flight after 1 s" in l for l in srv.log), srv.log
    finally:
        srv.stop()


def serve_stderr_until_listening(*args):
    """Starts `owl serve ARGS`, returns its stderr lines up to the listening line, then drains it."""
    from conftest import OWL, MODEL
    import subprocess

    p = subprocess.Popen([OWL, "serve", "--model", MODEL, "--port", "0", *args], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in p.stderr:
            lines.append(line)
            if "listening on" in line:
                break
        # The warning, when there is one, follows the listening line at once.
        p.send_signal(signal.SIGTERM)
        lines += p.stderr.readlines()
        assert p.wait(30) == 0, lines
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return "".join(lines)


def test_warns_when_listening_beyond_loopback_without_a_key():
    open_log = serve_stderr_until_listening("--host", "0.0.0.0")
    assert "warning: listening on 0.0.0.0:" in open_log and "--api-key" in open_log, open_log
    keyed = serve_stderr_until_listening("--host", "0.0.0.0", "--api-key", "k")
    local = serve_stderr_until_listening()
    assert "listening on http://127.0.0.1:" in local, local
    for log in (keyed, local):
        assert "listening on" in log and "warning" not in log, log
