"""`kill -9` of one `owl serve` under mixed load (streams and not, two API keys), then a
restart on the same OWL_HOME: every answer a client received (acknowledged: the
ledger record is fsynced before the answer ends) is in the ledger, matched by client,
prompt and completion tokens and cost; a line torn by the crash is cut with one
warning and every other line parses; nothing but the ledger is left in OWL_HOME
(no temp files); the restarted server is healthy and records after the old lines."""

import json
import os
import signal
import threading
import time
from collections import Counter

import rawhttp
from conftest import MODEL, Server, fresh_home, ledger_path, ledger_records

KEYS = {"alice": "key-a", "bob": "key-b"}


def ask(url, label, i, stream):
    """One request; returns (client, prompt_tokens, completion_tokens, cost) once fully answered."""
    body = {"model": MODEL, "max_tokens": 4 + i % 5, "temperature": 0,
            "messages": [{"role": "user", "content": f"Tell {label} fact {i} about owls."}]}
    headers = {"authorization": f"Bearer {KEYS[label]}"}
    if not stream:
        r = rawhttp.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=300)
        assert r.status_code == 200, r.text
        u = r.json()["usage"]
        return label, u["prompt_tokens"], u["completion_tokens"], u["owl"]["cost_usd"]
    body.update(stream=True, stream_options={"include_usage": True})
    usage = None
    with rawhttp.stream("POST", url + "/v1/chat/completions", json=body, headers=headers, timeout=300) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line == "data: [DONE]":
                return label, usage["prompt_tokens"], usage["completion_tokens"], usage["owl"]["cost_usd"]
            if line.startswith("data: "):
                c = json.loads(line[6:])
                usage = c.get("usage") or usage
    raise ConnectionError("the stream ended without [DONE]")


def leftovers(home):
    """Every file under home but the models link and the ledger's JSON Lines."""
    out = []
    for root, dirs, files in os.walk(home):
        dirs[:] = [d for d in dirs if not (root == str(home) and d == "models")]
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), home)
            if not (rel.startswith("ledger" + os.sep) and f.startswith("ledger") and f.endswith(".jsonl")):
                out.append(rel)
    return out


def test_kill_9_under_load_loses_no_acknowledged_line_and_restarts_clean(tmp_path_factory):
    home = fresh_home(tmp_path_factory, "crash-home")
    args = ["--parallel", "4"] + [a for label, key in KEYS.items() for a in ("--api-key", f"{label}:{key}")]
    s = Server(*args, env={"OWL_HOME": str(home)})
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def client(k):
        label = list(KEYS)[k % 2]
        i = 0
        while not stop.is_set():
            try:
                got = ask(s.url, label, 100 * k + i, stream=(k + i) % 2 == 0)
            except (OSError, ConnectionError, AssertionError, json.JSONDecodeError, KeyError, TypeError):
                return  # the server is gone
            with lock:
                acked.append(got)
            i += 1

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(6)]
    for t in threads:
        t.start()
    end = time.time() + 180
    while time.time() < end:
        with lock:
            if len(acked) >= 16:
                break
        time.sleep(0.05)
    os.kill(s.proc.pid, signal.SIGKILL)  # mid-load: other requests are in flight
    stop.set()
    for t in threads:
        t.join(60)
    s.proc.wait(10)
    with lock:
        acknowledged = list(acked)
    assert len(acknowledged) >= 16, acknowledged
    assert {a[0] for a in acknowledged} == set(KEYS)

    # A crash in the middle of a write can leave a torn last line; make one.
    path = ledger_path(home)
    with open(path, "a") as f:
        f.write('{"time": 1.0, "source": "serve", "mod')
    s2 = Server(*args, env={"OWL_HOME": str(home)})
    try:
        torn = [line for line in s2.log if "torn last line" in line]
        assert len(torn) == 1, s2.log
        n_before = len(path.read_text().splitlines())
        ask(s2.url, "bob", 999, stream=False)
        assert rawhttp.get(s2.url + "/health", timeout=10).status_code == 200
    finally:
        s2.stop()
    assert s2.proc.returncode == 0, s2.log
    lines = path.read_text().splitlines()
    assert len(lines) == n_before + 1, "the new record follows the old ones"
    recs = ledger_records(home)  # every line parses: the torn one was cut, no other is damaged
    have = Counter((r["client"], r["prompt_tokens"], r["completion_tokens"], r["cost_usd"]) for r in recs)
    want = Counter(acknowledged)
    missing = want - have
    assert not missing, f"{sum(missing.values())} acknowledged answers have no ledger line: {missing}"
    assert leftovers(home) == [], f"temp or stray files left: {leftovers(home)}"
