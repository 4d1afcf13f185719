"""The cost ledger through a real `owl serve` (smollm2-135m-instruct): usage.owl and the
x-owl-* headers equal the ledger's records; the sums in /metrics, /v1/owl/cost and
`owl cost` agree; the ledger never holds text; --no-ledger writes nothing; a killed
server loses no acknowledged record and starts cleanly; keys label clients.

Each server here has an OWL_HOME of its own (its models folder linked to the real
one), so its ledger holds exactly the requests of the test."""

import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import rawhttp
from conftest import MODEL, OWL, Server, fresh_home, ledger_path, ledger_records

MARKER = "quokkazebra"  # a word in every prompt: the ledger must never hold it
RECORD_FIELDS = {
    "time", "source", "model", "client", "prompt_tokens", "cached_tokens", "completion_tokens",
    "prefill_s", "decode_s", "cost_usd", "baseline_model", "baseline_usd", "savings_usd",
    "route", "reason",  # every server request is routed: local/default without upstreams
}


def chat(url, i, max_tokens=8, headers=None):
    body = {"model": MODEL, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": f"Say {MARKER} number {i} and a word about owls."}]}
    r = rawhttp.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=300)
    assert r.status_code == 200, r.text
    return r


def completion(url, i):
    body = {"model": MODEL, "prompt": f"The {MARKER} {i} went to", "max_tokens": 6, "temperature": 0}
    r = rawhttp.post(url + "/v1/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r


def stream_usage(url, i):
    body = {"model": MODEL, "max_tokens": 7, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"Count {MARKER} {i}."}]}
    usage, text = None, ""
    with rawhttp.stream("POST", url + "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            c = json.loads(line[6:])
            if c.get("usage"):
                usage = c["usage"]
            for ch in c["choices"]:
                text += ch["delta"].get("content") or ""
    assert usage is not None, "the final chunk carries usage"
    return usage, text


@pytest.fixture(scope="module")
def burst(tmp_path_factory):
    """A server on a fresh OWL_HOME after a burst of 12 mixed requests: (server, home, results)."""
    home = fresh_home(tmp_path_factory, "cost-home")
    s = Server("--parallel", "4", env={"OWL_HOME": str(home)})
    results = []  # (usage, headers or None, text)

    def one(i):
        if i % 3 == 0:
            usage, text = stream_usage(s.url, i)
            return usage, None, text
        r = chat(s.url, i) if i % 3 == 1 else completion(s.url, i)
        body = r.json()
        choice = body["choices"][0]
        text = choice.get("text") or choice.get("message", {}).get("content", "")
        return body["usage"], r.headers, text

    with ThreadPoolExecutor(6) as ex:
        results = list(ex.map(one, range(12)))
    yield s, home, results
    s.stop()


def test_every_response_carries_its_cost_and_the_ledger_the_same_record(burst):
    s, home, results = burst
    recs = ledger_records(home)
    assert len(recs) == len(results) == 12
    for usage, headers, _ in results:
        owl = usage["owl"]
        assert set(owl) == {"cost_usd", "baseline_usd", "baseline_model", "savings_usd"}
        assert owl["baseline_model"] == "gpt-4.1-mini"
        assert owl["cost_usd"] > 0 and owl["baseline_usd"] > 0
        assert abs(owl["savings_usd"] - (owl["baseline_usd"] - owl["cost_usd"])) < 1e-15
        if headers is not None:
            assert float(headers["x-owl-cost-usd"]) == owl["cost_usd"]
            assert float(headers["x-owl-savings-usd"]) == owl["savings_usd"]
        # A record with these figures (two requests batched together with the same
        # token counts cost the same, so several may match; the multiset check
        # below pairs them one to one).
        match = [r for r in recs if r["cost_usd"] == owl["cost_usd"]]
        assert match, (owl, recs)
        r = match[0]
        assert r["prompt_tokens"] == usage["prompt_tokens"]
        assert r["completion_tokens"] == usage["completion_tokens"]
        assert r["cached_tokens"] == usage["prompt_tokens_details"]["cached_tokens"]
        assert r["baseline_usd"] == owl["baseline_usd"] and r["savings_usd"] == owl["savings_usd"]
        assert (r["source"], r["client"], r["model"]) == ("server", "local", MODEL)
        # gpt-4.1-mini list prices on the same tokens: $0.40 / $1.60 per 1M.
        want = ((r["prompt_tokens"]) * 0.40 + r["completion_tokens"] * 1.60) / 1e6
        assert abs(r["baseline_usd"] - want) < 1e-15
        assert r["prefill_s"] > 0 and r["decode_s"] > 0
    # One record per response: the same figures, as multisets.
    from_responses = sorted((u["owl"]["cost_usd"], u["prompt_tokens"], u["completion_tokens"],
                             u["prompt_tokens_details"]["cached_tokens"]) for u, _, _ in results)
    from_ledger = sorted((r["cost_usd"], r["prompt_tokens"], r["completion_tokens"],
                          r["cached_tokens"]) for r in recs)
    assert from_responses == from_ledger


def test_the_ledger_holds_no_text(burst):
    s, home, results = burst
    raw = ledger_path(home).read_text()
    assert MARKER not in raw
    for rec in ledger_records(home):
        assert set(rec) == RECORD_FIELDS
    for _, _, text in results:
        if len(text.strip()) >= 6:
            assert text.strip() not in raw, text


def close(a, b, rel=1e-9):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


def test_metrics_cost_endpoint_and_owl_cost_agree_with_the_ledger(burst):
    s, home, _ = burst
    recs = ledger_records(home)
    sums = {k: sum(r[k] for r in recs) for k in ("cost_usd", "baseline_usd", "savings_usd", "prefill_s", "decode_s")}
    m = s.metrics()
    assert close(m["owl_cost_usd_total"], sums["cost_usd"])
    assert close(m["owl_baseline_cost_usd_total"], sums["baseline_usd"])
    assert close(m["owl_savings_usd_total"], sums["savings_usd"])
    # Every step's time went to the requests in it: busy time is the sum of the shares.
    assert close(m["owl_busy_seconds_total"], sums["prefill_s"] + sums["decode_s"], 1e-6)

    c = rawhttp.get(s.url + "/v1/owl/cost").json()
    t = c["totals"]
    assert t["requests"] == len(recs)
    assert t["prompt_tokens"] == sum(r["prompt_tokens"] for r in recs)
    assert t["completion_tokens"] == sum(r["completion_tokens"] for r in recs)
    for k in ("cost_usd", "baseline_usd", "savings_usd"):
        assert close(t[k], sums[k]), k
    assert c["by_model"][0]["key"] == MODEL and c["by_client"][0]["key"] == "local"
    assert sum(d["requests"] for d in c["by_day"]) == len(recs)
    assert close(t["local_per_1m"], sums["cost_usd"] / (t["prompt_tokens"] + t["completion_tokens"]) * 1e6)
    assert 0 < c["utilisation"]["utilisation"] <= 1
    assert {a["model"] for a in c["apis"]} >= {"gpt-4.1", "gpt-4.1-mini", "claude-3.7-sonnet"}

    out = subprocess.run([OWL, "cost", "--since", "all", "--by", "model", "-o", "json"], env={**os.environ, "OWL_HOME": str(home)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["totals"]["requests"] == len(recs)
    for k in ("cost_usd", "baseline_usd", "savings_usd"):
        assert close(doc["totals"][k], sums[k]), k
    assert doc["groups"][0]["key"] == MODEL
    csv = subprocess.run([OWL, "cost", "--since", "1h", "-o", "csv"], env={**os.environ, "OWL_HOME": str(home)},
                         capture_output=True, text=True, timeout=60)
    assert csv.returncode == 0, csv.stderr
    header, total = csv.stdout.strip().splitlines()[0].split(","), csv.stdout.strip().splitlines()[-1].split(",")
    row = dict(zip(header, total))
    assert row["group"] == "total" and int(row["requests"]) == len(recs)
    assert close(float(row["local $"]), sums["cost_usd"])


def test_no_ledger_writes_nothing(tmp_path_factory):
    home = fresh_home(tmp_path_factory, "noledger-home")
    s = Server("--no-ledger", env={"OWL_HOME": str(home)})
    try:
        usage = chat(s.url, 1).json()["usage"]
        assert usage["owl"]["cost_usd"] > 0
        c = rawhttp.get(s.url + "/v1/owl/cost").json()
        assert c["ledger"]["enabled"] is False and c["totals"]["requests"] == 1
    finally:
        s.stop()
    assert sorted(p.name for p in home.iterdir()) == ["models"]


def test_keys_label_clients_and_guard_the_cost_endpoint(tmp_path_factory):
    home = fresh_home(tmp_path_factory, "keys-home")
    keys = home / "keys.txt"
    keys.write_text("# label:key\nops:key-c\n\n")
    s = Server("--api-key", "alice:key-a", "--api-key", "bob:key-b", "--api-keys", str(keys), env={"OWL_HOME": str(home)})
    try:
        chat(s.url, 1, headers={"Authorization": "Bearer key-a"})
        chat(s.url, 4, headers={"Authorization": "Bearer key-c"})
        chat(s.url, 2, headers={"Authorization": "Bearer key-b"})
        chat(s.url, 3, headers={"Authorization": "Bearer key-b"})
        assert rawhttp.get(s.url + "/v1/owl/cost").status_code == 401
        assert rawhttp.get(s.url + "/v1/owl/cost", headers={"Authorization": "Bearer nope"}).status_code == 401
        page = rawhttp.get(s.url + "/dashboard")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        c = rawhttp.get(s.url + "/v1/owl/cost", headers={"Authorization": "Bearer key-a"}).json()
        assert {g["key"]: g["requests"] for g in c["by_client"]} == {"alice": 1, "bob": 2, "ops": 1}
    finally:
        s.stop()
    assert sorted(r["client"] for r in ledger_records(home)) == ["alice", "bob", "bob", "ops"]


def test_a_bad_price_file_is_one_error_naming_the_line(tmp_path):
    bad = tmp_path / "prices.toml"
    bad.write_text('[models."m"]\ninput_per_1m = 1.0\noutput_per_1m = -2.0\nas_of = "2025-05"\nsource = "x"\n')
    out = subprocess.run([OWL, "serve", "--model", MODEL, "--port", "0", "--prices", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"{bad}:3" in out.stderr, out.stderr
    assert "panicked" not in out.stderr
    out = subprocess.run([OWL, "serve", "--model", MODEL, "--port", "0", "--baseline", "gpt-9"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "unknown model \"gpt-9\"" in out.stderr and "gpt-4.1-mini" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_kill_9_loses_no_acknowledged_record_and_restarts_cleanly(tmp_path_factory):
    home = fresh_home(tmp_path_factory, "kill-home")
    s = Server("--parallel", "4", env={"OWL_HOME": str(home)})
    acked, lock = [], threading.Lock()
    stop = threading.Event()

    def client(k):
        i = 0
        while not stop.is_set():
            try:
                owl = chat(s.url, 100 * k + i, max_tokens=4).json()["usage"]["owl"]
            except Exception:
                return  # the server is gone
            with lock:
                acked.append(owl["cost_usd"])
            i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    deadline = time.time() + 120
    while time.time() < deadline:
        with lock:
            if len(acked) >= 12:
                break
        time.sleep(0.05)
    os.kill(s.proc.pid, signal.SIGKILL)  # mid-burst: other requests are in flight
    stop.set()
    for t in threads:
        t.join(60)
    s.proc.wait(10)
    with lock:
        acknowledged = list(acked)
    assert len(acknowledged) >= 12
    # Whatever a crash mid-write leaves: a torn last line.
    with open(ledger_path(home), "a") as f:
        f.write('{"time": 1.0, "source": "ser')
    s2 = Server(env={"OWL_HOME": str(home)})
    try:
        warnings = [l for l in s2.log if "torn last line" in l]
        assert len(warnings) == 1, s2.log
        chat(s2.url, 999, max_tokens=3)
        c = rawhttp.get(s2.url + "/v1/owl/cost").json()
    finally:
        s2.stop()
    recs = ledger_records(home)  # every line parses: the torn one was cut
    costs = {r["cost_usd"] for r in recs}
    missing = [c for c in acknowledged if c not in costs]
    assert not missing, f"{len(missing)} acknowledged records lost"
    assert c["totals"]["requests"] == len(recs)


def test_a_client_that_goes_away_is_still_charged(tmp_path_factory):
    home = fresh_home(tmp_path_factory, "gone-home")
    s = Server(env={"OWL_HOME": str(home)})
    try:
        body = {"model": MODEL, "max_tokens": 200, "temperature": 0, "stream": True, "ignore_eos": True,
                "messages": [{"role": "user", "content": "Tell a long story."}]}
        with rawhttp.stream("POST", s.url + "/v1/chat/completions", json=body) as r:
            seen = 0
            for line in r.iter_lines():
                if line.startswith("data: ") and '"content"' in line:
                    seen += 1
                    if seen == 4:
                        break  # leaving the block closes the connection mid-answer
        deadline = time.time() + 30
        while time.time() < deadline and not ledger_records(home):
            time.sleep(0.1)
        recs = ledger_records(home)
        assert len(recs) == 1, recs
        assert 1 <= recs[0]["completion_tokens"] < 200 and recs[0]["decode_s"] > 0
        m = s.metrics()
        assert m["owl_active_sequences"] == 0
        assert close(m["owl_busy_seconds_total"], recs[0]["prefill_s"] + recs[0]["decode_s"], 1e-6)
        assert close(m["owl_cost_usd_total"], recs[0]["cost_usd"])
    finally:
        s.stop()
