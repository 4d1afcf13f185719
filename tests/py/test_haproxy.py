"""Three `owl serve` replicas behind HAProxy (deploy/haproxy/haproxy.cfg, with
this test's ports): under steady load one replica is `kill -9`'d and another
drained with SIGTERM. Non-streaming requests see no failure (HAProxy retries
them elsewhere), a stream on the killed replica ends without [DONE] so the
client sees it cut, and both replicas rejoin after a restart."""

import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import rawhttp
from conftest import Server

ROOT = Path(__file__).resolve().parents[2]
CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
REPLICA_ARGS = ("--ctx", "1024", "--parallel", "2", "--threads", "1", "--drain-seconds", "20")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_for(pred, secs):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            if pred():
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def requests_served(port):
    try:
        text = rawhttp.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except OSError:
        return 0
    m = re.search(r"^owl_requests_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0


class Load:
    """Client threads sending non-streaming completions through HAProxy until stopped."""

    def __init__(self, url, n):
        self.url, self.stop = url, threading.Event()
        self.ok, self.failures = 0, []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def run(self):
        body = {"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
        while not self.stop.is_set():
            try:
                r = rawhttp.post(self.url + "/v1/completions", json=body, timeout=60)
                good = r.status_code == 200 and r.json()["choices"][0]["text"] is not None
                failure = None if good else f"{r.status_code} {r.text[:200]}"
            except Exception as e:
                failure = repr(e)
            with self.lock:
                if failure:
                    self.failures.append(failure)
                else:
                    self.ok += 1

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(90)


def long_stream(url, started, out):
    """One streaming completion; out gets the replica, the chunks, whether [DONE] came, and any error."""
    body = {"prompt": "Once upon a time", "max_tokens": 900, "ignore_eos": True, "temperature": 0, "stream": True}
    out.update(chunks=[], done=False, error=None)
    try:
        with rawhttp.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
            out["replica"] = r.headers.get("x-served-by")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    data = line[len("data: "):]
                    if data == "[DONE]":
                        out["done"] = True
                        break
                    out["chunks"].append(json.loads(data))
                    started.set()
    except Exception as e:
        out["error"] = repr(e)
    started.set()


@pytest.fixture
def haproxy_bin():
    exe = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    assert exe, "haproxy is missing: `apt-get install haproxy` (scripts/test installs it)"
    return exe


def test_replicas_survive_kill_and_drain(haproxy_bin, tmp_path):
    front, *ports = free_ports(4)
    cfg = CFG.read_text()
    cfg = cfg.replace("bind 127.0.0.1:8080", f"bind 127.0.0.1:{front}")
    for i, p in enumerate(ports):
        cfg = cfg.replace(f"127.0.0.1:{8081 + i} check", f"127.0.0.1:{p} check")
    assert all(f":{p} check" in cfg for p in ports), cfg
    (tmp_path / "haproxy.cfg").write_text(cfg)
    replicas = {}
    proxy = None
    try:
        starters = [threading.Thread(target=lambda i=i, p=p: replicas.__setitem__(f"owl{i + 1}", Server(*REPLICA_ARGS, port=p)))
                    for i, p in enumerate(ports)]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        assert len(replicas) == 3
        port_of = {f"owl{i + 1}": p for i, p in enumerate(ports)}
        proxy = subprocess.Popen([haproxy_bin, "-db", "-f", str(tmp_path / "haproxy.cfg")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{front}"
        assert wait_for(lambda: proxy.poll() is not None or rawhttp.get(url + "/health", timeout=5).status_code == 200, 20)
        assert proxy.poll() is None, proxy.stderr.read()

        load = Load(url, 3)
        # A long stream; the replica serving it is the one killed.
        started, stream = threading.Event(), {}
        st = threading.Thread(target=long_stream, args=(url, started, stream), daemon=True)
        st.start()
        assert started.wait(60) and stream["error"] is None and stream["chunks"], stream
        victim = stream["replica"]
        assert victim in replicas, stream
        replicas[victim].proc.kill()
        replicas[victim].proc.wait()
        st.join(60)
        assert not stream["done"], "a stream cut by kill -9 must not end with [DONE]"
        assert all(c["choices"][0]["finish_reason"] is None for c in stream["chunks"] if c["choices"])
        time.sleep(3)

        # Drain another one under the same load: it finishes what it has and exits 0.
        drained = next(n for n in replicas if n != victim)
        replicas[drained].proc.send_signal(signal.SIGTERM)
        assert replicas[drained].proc.wait(30) == 0, replicas[drained].log
        time.sleep(2)

        # Both come back on their ports; HAProxy's checks put them back in rotation.
        for name in (victim, drained):
            replicas[name] = Server(*REPLICA_ARGS, port=port_of[name])
        assert wait_for(lambda: all(requests_served(port_of[n]) > 0 for n in (victim, drained)), 30), \
            "a restarted replica got no traffic from HAProxy"
        load.finish()
        assert load.failures == [], f"{len(load.failures)} failed of {load.ok + len(load.failures)}: {load.failures[:5]}"
        assert load.ok >= 20, load.ok
        print(f"haproxy: {load.ok} non-streaming requests, 0 failures; stream on {victim} cut after "
              f"{len(stream['chunks'])} chunks ({stream['error']})")
    finally:
        if proxy:
            proxy.terminate()
            proxy.wait(10)
        for s in replicas.values():
            s.stop()
