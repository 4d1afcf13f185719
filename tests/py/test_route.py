"""Routing through real `owl serve` processes on loopback: fronts with
smollm2-135m-instruct and an upstream with qwen2.5-coder-0.5b-instruct that
requires a (fake) key the fronts read from their environment. One front probes
with --route-threshold 0 (everything stays local), the other with 1 (everything
escalates, with no probe), a third with 0.9 (the probe runs and drops its draft);
each keeps a ledger in an OWL_HOME of its own."""

import json
import subprocess
import time

import pytest

import rawhttp
import conftest
from conftest import Server, fresh_home, ledger_path, ledger_records, stream_text

UP_MODEL = "qwen2.5-coder-0.5b-instruct"
KEY = "sk-fake-route-key-4f1c9"
MSG = [{"role": "user", "content": "Name three colors."}]
LONG = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]


def upstream_spec(up):
    return f"big={up.url}/v1,key_env=ROUTE_KEY,model={UP_MODEL}"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    front_model, conftest.MODEL = conftest.MODEL, UP_MODEL  # Server passes conftest.MODEL as --model
    try:
        up = Server("--api-key", KEY, "--no-ledger")
    finally:
        conftest.MODEL = front_model
    home = fresh_home(tmp_path_factory, "front0")
    front = Server("--upstream", upstream_spec(up), "--upstream-timeout", "120",
                   "--route-max-local-tokens", "200", "--route-threshold", "0",
                   env={"ROUTE_KEY": KEY, "OWL_HOME": str(home)})
    front.home = home
    yield front, up
    front.stop()
    up.stop()


@pytest.fixture(scope="module")
def escalating(pair, tmp_path_factory):
    """A front whose probe escalates everything (threshold 1) and captures every answer
    (--capture-all), its upstream, threshold and capture file given in its config file
    ([[upstream]], [route]) instead of flags."""
    _, up = pair
    home = fresh_home(tmp_path_factory, "front1")
    (home / "config.toml").write_text(
        f'[[upstream]]\nname = "big"\nurl = "{up.url}/v1"\nkey_env = "ROUTE_KEY"\nmodel = "{UP_MODEL}"\n'
        f'price = "gpt-4.1-mini"\n\n[route]\nthreshold = 1\ncapture = "{home / "capture.jsonl"}"\n')
    s = Server("--upstream-timeout", "120", "--capture-all",
               env={"ROUTE_KEY": KEY, "OWL_HOME": str(home)})
    s.home = home
    yield s
    s.stop()


def chat(url, headers=None, **kw):
    body = {"messages": MSG, "max_tokens": 12, "temperature": 0, **kw}
    return rawhttp.post(url + "/v1/chat/completions", json=body, headers=headers or {})


def streamed(url, headers=None, **kw):
    body = {"messages": MSG, "max_tokens": 12, "temperature": 0, "stream": True, **kw}
    return stream_text(url, body, headers=headers)[0]


def direct(up, path="/v1/chat/completions", **kw):
    """The upstream's own answer, asked directly."""
    body = {"max_tokens": 12, "temperature": 0, **kw}
    if path == "/v1/chat/completions":
        body.setdefault("messages", MSG)
    r = rawhttp.post(up.url + path, json=body, headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    return c["message"]["content"] if "message" in c else c["text"]


def route_counts(url):
    out = {}
    for line in rawhttp.get(url + "/metrics").text.splitlines():
        if line.startswith("owl_route_requests_total{"):
            labels, n = line.rsplit(" ", 1)
            out[labels[len("owl_route_requests_total"):]] = float(n)
    return out


def test_forced_routes_and_equal_answers(pair):
    front, up = pair
    direct = chat(up.url, headers={"authorization": f"Bearer {KEY}"}).json()["choices"][0]["message"]["content"]
    r = chat(front.url, headers={"x-owl-route": "upstream"})
    assert r.status_code == 200
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"], r.headers["x-owl-upstream"]) == ("upstream", "header", "big")
    assert r.json()["choices"][0]["message"]["content"] == direct
    assert r.json()["id"].startswith("chatcmpl-")
    assert streamed(front.url, headers={"x-owl-route": "upstream:big"}) == direct
    r = chat(front.url, headers={"x-owl-route": "local"})
    assert (r.status_code, r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == (200, "local", "header")
    r = chat(front.url, model=UP_MODEL)
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == ("upstream", "model")
    assert r.json()["choices"][0]["message"]["content"] == direct
    r = chat(front.url)
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == ("local", "confident")


def test_upstream_answers_are_charged_in_the_ledger(pair):
    front, _ = pair
    recs = [x for x in ledger_records(front.home) if x["route"] == "upstream"]
    assert {x["reason"] for x in recs} == {"header", "model"}
    for x in recs:
        # Without a price, an owl upstream's own usage.owl.cost_usd is what it charged.
        assert x["upstream"] == "big" and x["model"] == UP_MODEL and x["upstream_usd"] > 0
        assert x["completion_tokens"] >= 1 and abs(x["cost_usd"] - x["upstream_usd"]) < 1e-15
        assert "probe_score" not in x


def test_bad_header_and_upstream_4xx(pair):
    front, _ = pair
    r = chat(front.url, headers={"x-owl-route": "upstream:nope"})
    assert r.status_code == 400 and "big" in r.json()["error"]["message"]
    r = chat(front.url, headers={"x-owl-route": "sideways"})
    assert r.status_code == 400
    # The upstream refuses max_tokens over its context: its 400 comes through as is.
    r = chat(front.url, headers={"x-owl-route": "upstream"}, max_tokens=10**6)
    assert r.status_code == 400 and r.headers["x-owl-route"] == "upstream"


def test_metrics_count_routes(pair):
    front, _ = pair
    text = rawhttp.get(front.url + "/metrics").text
    assert 'owl_route_requests_total{route="upstream",reason="header"}' in text
    assert 'owl_route_requests_total{route="local",reason="confident"}' in text


def test_too_long_goes_upstream(pair):
    front, _ = pair
    long_msg = [{"role": "user", "content": "Summarize: " + "the cat sat on the mat and " * 60}]
    r = chat(front.url, messages=long_msg, max_tokens=4)
    assert r.status_code == 200
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"], r.headers["x-owl-upstream"]) == ("upstream", "too_long", "big")


def test_client_drop_cancels_upstream_request(pair):
    front, up = pair
    auth = {"authorization": f"Bearer {KEY}"}
    before = up.metrics(headers=auth)
    body = {"messages": [{"role": "user", "content": "Count from 1 to 1000, one number a line."}],
            "max_tokens": 1000, "temperature": 0, "stream": True, "ignore_eos": True}
    with rawhttp.stream("POST", front.url + "/v1/chat/completions", json=body,
                        headers={"x-owl-route": "upstream"}, timeout=60) as r:
        assert r.status_code == 200
        got = 0  # content deltas read
        for line in r.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                got += 1
                if got == 3:
                    break
    # The front drops its upstream connection, so the upstream's engine cancels the request.
    deadline = time.time() + 15
    while time.time() < deadline:
        m = up.metrics(headers=auth)
        if m["owl_active_sequences"] == 0 and m["owl_requests_cancelled_total"] > before["owl_requests_cancelled_total"]:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"upstream request not cancelled: {m}")
    assert m["owl_generated_tokens_total"] - before["owl_generated_tokens_total"] < 900
    # The front charged what it relayed before the client went away, and marked the record cut.
    deadline = time.time() + 15
    while time.time() < deadline and not any(x.get("cut") for x in ledger_records(front.home)):
        time.sleep(0.1)
    cut = [x for x in ledger_records(front.home) if x.get("cut")]
    assert len(cut) == 1, ledger_records(front.home)
    assert (cut[0]["route"], cut[0]["reason"], cut[0]["upstream"]) == ("upstream", "header", "big")
    assert cut[0]["completion_tokens"] >= 3 and cut[0]["prompt_tokens"] > 10


def make_certs(d):
    """A CA, a server certificate it signed for the name localhost only, and another CA."""
    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60, cwd=d)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other"):
        ossl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
             "-subj", f"/CN=owl test {ca}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ossl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    (d / "haproxy.pem").write_text((d / "server.pem").read_text() + (d / "server.key").read_text())


def tls_proxy(d, target_url):
    """HAProxy terminating TLS (the localhost certificate) in front of `target_url`."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = target_url.split("//", 1)[1]
    (d / "haproxy.cfg").write_text(
        "global\n  maxconn 64\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 300s\n"
        f"  timeout server 300s\nfrontend tls\n  bind 127.0.0.1:{port} ssl crt {d / 'haproxy.pem'}\n"
        f"  default_backend up\nbackend up\n  server up {target}\n")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(d / "haproxy.cfg")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("haproxy did not start")


def test_https_upstreams_verify_certificates_and_cut_streams_are_charged(pair, tmp_path_factory):
    """An https:// upstream behind HAProxy (a test CA's certificate for localhost): with
    ca= it answers as the upstream itself does; a wrong CA, a host name the certificate is
    not for, and the public roots are each refused with a clear reason, and the request falls
    back locally. HAProxy killed mid-stream cuts the stream: it is charged for what was
    relayed and marked cut."""
    _, up = pair
    d = tmp_path_factory.mktemp("tls")
    make_certs(d)
    proxy, port = tls_proxy(d, up.url)
    home = fresh_home(tmp_path_factory, "front_tls")
    common = f"key_env=ROUTE_KEY,model={UP_MODEL}"
    front = Server("--upstream", f"tls=https://localhost:{port}/v1,{common},ca={d / 'ca.pem'}",
                   "--upstream", f"wrongca=https://localhost:{port}/v1,{common},ca={d / 'other.pem'}",
                   "--upstream", f"wronghost=https://127.0.0.1:{port}/v1,{common},ca={d / 'ca.pem'}",
                   "--upstream", f"public=https://localhost:{port}/v1,{common}",
                   "--upstream-timeout", "120", env={"ROUTE_KEY": KEY, "OWL_HOME": str(home)})
    try:
        want = direct(up)
        r = chat(front.url, headers={"x-owl-route": "upstream:tls"})
        assert (r.status_code, r.headers["x-owl-route"], r.headers["x-owl-upstream"]) == (200, "upstream", "tls")
        assert r.json()["choices"][0]["message"]["content"] == want
        assert streamed(front.url, headers={"x-owl-route": "upstream:tls"}) == want
        says = {
            "wrongca": f"upstream wrongca: TLS handshake with localhost failed: its certificate is not signed by the CA in ca={d / 'other.pem'}",
            "wronghost": 'upstream wronghost: TLS handshake with 127.0.0.1 failed: its certificate is not for the host name "127.0.0.1"',
            "public": "upstream public: TLS handshake with localhost failed: its certificate is not signed by the public roots",
        }
        for name, line in says.items():
            r = chat(front.url, headers={"x-owl-route": f"upstream:{name}"})
            assert (r.status_code, r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == (200, "local", "upstream_error")
            assert r.json()["choices"][0]["message"]["content"]
            assert any(line in x for x in front.log), (line, "".join(front.log))
        # Cut: HAProxy dies after three deltas; the client gets what was relayed, an error and [DONE].
        body = {"messages": [{"role": "user", "content": "Count from 1 to 1000, one number a line."}],
                "max_tokens": 1000, "temperature": 0, "stream": True, "ignore_eos": True}
        deltas, events = 0, []
        with rawhttp.stream("POST", front.url + "/v1/chat/completions", json=body,
                            headers={"x-owl-route": "upstream:tls"}, timeout=60) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(line[6:])
                if line[6:] != "[DONE]":
                    chunk = json.loads(line[6:])
                    deltas += any(c.get("delta", {}).get("content") for c in chunk.get("choices", []))
                if deltas == 3 and proxy.poll() is None:
                    proxy.kill()
        assert events[-1] == "[DONE]" and "broke off" in events[-2], events[-3:]
        rec = ledger_records(home)[-1]
        assert (rec["route"], rec["upstream"], rec["reason"], rec.get("cut")) == ("upstream", "tls", "header", True)
        assert rec["completion_tokens"] == deltas >= 3 and rec["prompt_tokens"] > 10
        assert all("cut" not in x for x in ledger_records(home)[:-1])
        assert KEY not in "".join(front.log) and KEY not in ledger_path(home).read_text()
    finally:
        front.stop()
        proxy.kill()
        proxy.wait()


def test_threshold_zero_keeps_the_probed_request_going(pair):
    """--route-threshold 0: the probe never escalates, and its tokens are the start of
    the answer: the same text as an unprobed local answer, generated once."""
    front, _ = pair
    n = 24  # more than the 16 probe tokens
    plain = chat(front.url, headers={"x-owl-route": "local"}, messages=LONG, max_tokens=n).json()
    before = front.metrics()
    r = chat(front.url, messages=LONG, max_tokens=n)
    after = front.metrics()
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == ("local", "confident")
    assert 0 <= float(r.headers["x-owl-probe-score"]) <= 1
    body = r.json()
    assert body["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]
    assert body["choices"][0]["logprobs"] is None  # the probe's logprobs stay inside
    done = body["usage"]["completion_tokens"]
    assert done == n and after["owl_generated_tokens_total"] - before["owl_generated_tokens_total"] == done
    text, headers = stream_text(front.url, {"messages": LONG, "max_tokens": n, "temperature": 0, "stream": True})
    assert text == plain["choices"][0]["message"]["content"]
    assert headers["x-owl-route-reason"] == "confident"
    # /v1/completions takes the same policy.
    r = rawhttp.post(front.url + "/v1/completions", json={"prompt": "1, 2, 3,", "max_tokens": 8, "temperature": 0})
    assert (r.status_code, r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == (200, "local", "confident")
    recs = [x for x in ledger_records(front.home) if x.get("reason") == "confident"]
    assert len(recs) >= 3 and all(0 <= x["probe_score"] <= 1 and x["route"] == "local" for x in recs)


@pytest.fixture(scope="module")
def streaming0(pair, tmp_path_factory):
    """A front at --route-threshold 0 with a long probe (64 tokens), so that a stream's
    first content can be told apart from the probe's end by many tokens."""
    _, up = pair
    home = fresh_home(tmp_path_factory, "front0s")
    s = Server("--upstream", upstream_spec(up), "--upstream-timeout", "120", "--route-threshold", "0",
               "--route-probe-tokens", "64", env={"ROUTE_KEY": KEY, "OWL_HOME": str(home)})
    s.home = home
    yield s
    s.stop()


def test_threshold_zero_streams_the_probe_tokens_as_they_come(streaming0):
    """--route-threshold 0 can never escalate, so the probe holds nothing back: a stream's
    first content delta arrives while its 64 probe tokens are still being generated. The
    signal is the front's own per-token counter (owl_generated_tokens_total), read when
    that delta arrives: under 64 then (a held-back draft would have it at 64 or more).
    The score is still computed and recorded in the ledger, and equals the score of the
    same request not streamed (which is probed first and carries it in a header)."""
    s = streaming0
    probe, n = 64, 80
    body = {"messages": LONG, "max_tokens": n, "temperature": 0, "ignore_eos": True}
    r = chat(s.url, **body)
    assert (r.status_code, r.headers["x-owl-route-reason"]) == (200, "confident")
    want, score = r.json()["choices"][0]["message"]["content"], float(r.headers["x-owl-probe-score"])
    before = s.metrics()["owl_generated_tokens_total"]
    text, at_first, chunks = "", None, 0
    with rawhttp.stream("POST", s.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=300) as resp:
        assert resp.status_code == 200
        assert (resp.headers["x-owl-route"], resp.headers["x-owl-route-reason"]) == ("local", "confident")
        assert "x-owl-probe-score" not in resp.headers  # sent before the score is known
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            assert "error" not in chunk, chunk
            delta = (chunk["choices"][0]["delta"].get("content") or "") if chunk["choices"] else ""
            if delta and at_first is None:
                at_first = s.metrics()["owl_generated_tokens_total"] - before
            if delta:
                chunks += 1
                assert chunk["choices"][0]["logprobs"] is None  # the probe's logprobs stay inside
            text += delta
    assert at_first is not None and at_first < probe, at_first
    assert text == want and chunks > 1
    rec = ledger_records(s.home)[-1]
    assert (rec["route"], rec["reason"], rec["completion_tokens"]) == ("local", "confident", n)
    assert abs(rec["probe_score"] - score) < 1e-3, (rec["probe_score"], score)


def test_calibrate_from_a_prompts_file_runs_the_servers_probe(pair, tmp_path):
    """`owl route calibrate --escalate 0.5 PROMPTS_FILE` probes each prompt here, with no
    server: its threshold lies halfway between the middle two of the scores the server's
    own probe gives the same prompts."""
    import re
    front, _ = pair
    prompts = ["What is 2 + 2?", "Name three colors.", "Write a haiku about the sea.", "What is the capital of France?"]
    scores = []
    for text in prompts:
        r = chat(front.url, messages=[{"role": "user", "content": text}], max_tokens=20)
        assert r.headers["x-owl-route-reason"] == "confident"
        scores.append(float(r.headers["x-owl-probe-score"]))
    f = tmp_path / "prompts.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": prompts[0]}], "answer": "4"}) + "\n"
                 + json.dumps({"prompt": prompts[1]}) + "\n" + "\n".join(prompts[2:]) + "\n")
    cfg = tmp_path / "config.toml"
    cfg.write_text("[cost]\nwatts = 30\n")
    calibrate = [conftest.OWL, "route", "calibrate", "--escalate", "0.5", "--model", conftest.MODEL,
                 "--config", str(cfg), "-t", "2"]
    p = subprocess.run([*calibrate, str(f)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "2 of 4 prompts (50.0%)" in p.stdout, p.stdout
    s = sorted(scores)
    t = float(re.search(r"threshold = (\S+)", cfg.read_text()).group(1))
    assert abs(t - (s[1] + s[2]) / 2) < 2e-3, (t, s)
    assert "watts = 30" in cfg.read_text()
    f.write_text('{"answer": "4"}\n')
    p = subprocess.run([*calibrate, str(f)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and f"{f}:1:" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = subprocess.run(calibrate, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "PROMPTS_FILE" in p.stderr, p.stderr


def test_threshold_one_escalates_and_no_draft_reaches_the_client(pair, escalating):
    _, up = pair
    want = direct(up)
    before = escalating.metrics()
    r = chat(escalating.url)
    assert r.status_code == 200
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"], r.headers["x-owl-upstream"]) == \
        ("upstream", "low_confidence", "big")
    assert r.json()["choices"][0]["message"]["content"] == want
    usage = r.json()["usage"]
    # A streaming client gets exactly the upstream's answer: nothing of the dropped draft.
    text, headers = stream_text(escalating.url, {"messages": MSG, "max_tokens": 12, "temperature": 0, "stream": True})
    assert text == want and headers["x-owl-route-reason"] == "low_confidence"
    assert "x-owl-probe-score" not in r.headers and "x-owl-probe-score" not in headers
    # At threshold 1 no probe runs: the local model generated nothing, cancelled nothing.
    after = escalating.metrics()
    for m in ["owl_generated_tokens_total", "owl_prompt_tokens_total", "owl_requests_cancelled_total"]:
        assert after.get(m, 0) == before.get(m, 0), m
    counts = route_counts(escalating.url)
    assert counts['{route="upstream",reason="low_confidence"}'] == 2
    recs = ledger_records(escalating.home)
    assert len(recs) == 2
    for rec in recs:
        assert (rec["route"], rec["reason"], rec["upstream"], rec["model"]) == ("upstream", "low_confidence", "big", UP_MODEL)
        assert "probe_score" not in rec
        assert (rec["prompt_tokens"], rec["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
        # price = "gpt-4.1-mini" ($0.40 / $1.60 per 1M) on the upstream's tokens, and no
        # local busy time: there was no draft.
        want_usd = (usage["prompt_tokens"] * 0.40 + usage["completion_tokens"] * 1.60) / 1e6
        assert abs(rec["upstream_usd"] - want_usd) < 1e-15
        assert rec.get("decode_s", 0) + rec.get("prefill_s", 0) == 0 and rec["cost_usd"] == rec["upstream_usd"]
    assert r.json()["usage"]["owl"]["cost_usd"] == recs[0]["cost_usd"]


def test_completions_are_routed_too(pair, escalating):
    front, up = pair
    body = {"prompt": "def add(a, b):", "max_tokens": 10, "temperature": 0}
    want = direct(up, "/v1/completions", **body)
    r = rawhttp.post(escalating.url + "/v1/completions", json=body)
    assert r.status_code == 200, r.text
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == ("upstream", "low_confidence")
    assert r.json()["choices"][0]["text"] == want and r.json()["id"].startswith("cmpl-")
    text, _ = stream_text(escalating.url, {**body, "stream": True}, path="/v1/completions")
    assert text == want
    r = rawhttp.post(front.url + "/v1/completions", json=body, headers={"x-owl-route": "upstream"})
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == ("upstream", "header")
    assert r.json()["choices"][0]["text"] == want
    r = rawhttp.post(front.url + "/v1/completions", json={**body, "model": UP_MODEL})
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == ("upstream", "model")
    r = rawhttp.post(front.url + "/v1/completions", json={**body, "prompt": "the cat sat on the mat " * 40})
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == ("upstream", "too_long")
    r = rawhttp.post(escalating.url + "/v1/completions", json=body, headers={"x-owl-route": "local"})
    assert (r.status_code, r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == (200, "local", "header")
    recs = ledger_records(escalating.home)
    assert {(x["route"], x["reason"]) for x in recs} >= {("upstream", "low_confidence"), ("local", "header")}


# OpenAI's chat fine-tuning format, with owl's metadata.
FINE_TUNING = {
    "type": "object", "required": ["messages", "metadata"], "additionalProperties": False,
    "properties": {
        "messages": {"type": "array", "minItems": 2, "items": {
            "type": "object", "required": ["role"],
            "properties": {
                "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
                "content": {"type": ["string", "null"]},
                "tool_calls": {"type": "array"},
                "weight": {"enum": [0, 1]},
            },
        }},
        "tools": {"type": "array"},
        "metadata": {"type": "object", "required": ["id", "time", "teacher", "reason", "probe_score", "usage", "local_draft"]},
    },
}


# A captured /v1/completions answer: OpenAI's (legacy) and TRL's prompt/completion format.
PROMPT_COMPLETION = {
    "type": "object", "required": ["prompt", "completion", "metadata"], "additionalProperties": False,
    "properties": {"prompt": {"type": "string"}, "completion": {"type": "string"},
                   "metadata": FINE_TUNING["properties"]["metadata"]},
}


def capture_records(s, n, chat_only=True):
    """The capture file's chat records (or all) once its writer has written `n` records."""
    deadline = time.time() + 30
    while time.time() < deadline and s.metrics().get("owl_capture_records_total", 0) < n:
        time.sleep(0.1)
    path = s.home / "capture.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in recs if "messages" in r] if chat_only else recs


def test_capture_keeps_the_teachers_answers_for_distillation(pair, escalating):
    import jsonschema

    _, up = pair
    # test_threshold_one... left two (non-streamed and streamed), test_completions... three
    # completions: two the upstream answered (low_confidence), one local (--capture-all).
    done = [r for r in capture_records(escalating, 5, chat_only=False) if "prompt" in r]
    body = {"prompt": "def add(a, b):", "max_tokens": 10, "temperature": 0}
    want = direct(up, "/v1/completions", **body)
    assert len(done) == 3
    for rec in done:
        jsonschema.validate(rec, PROMPT_COMPLETION)
        assert rec["prompt"] == body["prompt"] and rec["completion"]
    assert [r["metadata"]["reason"] for r in done] == ["low_confidence", "low_confidence", "header"]
    assert done[0]["completion"] == done[1]["completion"] == want  # streamed and not
    assert done[0]["metadata"]["teacher"] == UP_MODEL and done[0]["metadata"]["usage"]["completion_tokens"] >= 1
    recs = capture_records(escalating, 5)
    assert len(recs) == 2
    want = direct(up)
    for rec in recs:
        jsonschema.validate(rec, FINE_TUNING)
        assert rec["messages"][:-1] == MSG
        assert rec["messages"][-1] == {"role": "assistant", "content": want, "weight": 1}
        meta = rec["metadata"]
        assert (meta["teacher"], meta["reason"]) == (UP_MODEL, "low_confidence")
        assert meta["probe_score"] is None and meta["local_draft"] is None  # no probe at threshold 1
        assert meta["usage"]["completion_tokens"] >= 1 and meta["id"].startswith("chatcmpl-")
    turns = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"}, *MSG]
    assert chat(escalating.url, headers={"x-owl-capture": "off"}, messages=turns).status_code == 200
    assert chat(escalating.url, headers={"x-owl-route": "upstream"}, messages=turns).status_code == 200
    recs = capture_records(escalating, 6)
    assert len(recs) == 3  # the opted-out request is not there
    jsonschema.validate(recs[2], FINE_TUNING)
    assert recs[2]["messages"][1] == {"role": "assistant", "content": "Hello!", "weight": 0}
    assert recs[2]["metadata"]["reason"] == "header" and recs[2]["metadata"]["local_draft"] is None
    assert (escalating.home / "capture.jsonl").stat().st_mode & 0o777 == 0o600
    # --capture-all: local answers too, streamed or not, under their own reason and model.
    local = chat(escalating.url, headers={"x-owl-route": "local"}).json()["choices"][0]["message"]["content"]
    assert streamed(escalating.url, headers={"x-owl-route": "local"}) == local
    recs = capture_records(escalating, 8)
    assert len(recs) == 5
    local_model = ledger_records(escalating.home)[-1]["model"]
    for rec in recs[3:]:
        jsonschema.validate(rec, FINE_TUNING)
        assert rec["messages"][-1] == {"role": "assistant", "content": local, "weight": 1}
        assert (rec["metadata"]["teacher"], rec["metadata"]["reason"]) == (local_model, "header")
    # `owl capture export` gives the same conversations back, metadata left out.
    out = subprocess.run([conftest.OWL, "capture", "export", str(escalating.home / "capture.jsonl")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    every = capture_records(escalating, 8, chat_only=False)
    assert [json.loads(line) for line in out.stdout.splitlines()] == \
        [{"messages": r["messages"]} if "messages" in r else {"prompt": r["prompt"], "completion": r["completion"]}
         for r in every]
    assert escalating.metrics()["owl_capture_dropped_total"] == 0


def test_route_eval_compares_local_upstream_and_routed(pair, tmp_path):
    front, _ = pair
    items = [{"messages": [{"role": "user", "content": "What is 2 + 2? Answer with the number only."}], "answer": "4"},
             {"messages": [{"role": "user", "content": "What is the capital of France?"}], "answer": "Paris"}]
    f = tmp_path / "eval.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in items))
    p = subprocess.run([conftest.OWL, "route", "eval", str(f), "--url", front.url, "--max-tokens", "8", "-o", "json"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    v = json.loads(p.stdout)
    modes = {m["mode"]: m for m in v["modes"]}
    assert v["items"] == 2 and set(modes) == {"local only", "upstream only", "routed"}
    # The front's threshold is 0: routed stays local.
    assert [modes[m]["escalated"] for m in ("local only", "upstream only", "routed")] == [0, 1, 0]
    assert all(0 <= m["quality"] <= 1 and m["cost_usd"] > 0 for m in modes.values())
    p = subprocess.run([conftest.OWL, "route", "eval", str(f), "--url", "http://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "cannot connect" in p.stderr and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, config, says", [
    (["--route-threshold", "2", "--upstream", "a=http://127.0.0.1:9/v1"], None, "between 0"),
    (["--route-threshold", "0.5"], None, "needs an --upstream"),
    (["--upstream", "a=http://127.0.0.1:9/v1,price=no-such-api"], None, "no-such-api"),
    (["--upstream", "a=http://127.0.0.1:9/v1"], '[[upstream]]\nname = "a"\nurl = "http://h/v1"\n', "twice"),
    ([], '[[upstream]]\nname = "a"\nurl = "ftp://h"\n', "cfg.toml:1: [[upstream]] upstream a"),
    ([], '[[upstream]]\nname = "a"\nurl = "http://h"\nkey = "sk-x"\n', "unknown field `key`"),
    (["--upstream", "a=https://127.0.0.1:9/v1,ca=/no/such/ca.pem"], None, "upstream a: cannot read ca=/no/such/ca.pem"),
    (["--upstream", "a=http://127.0.0.1:9/v1,ca=ca.pem"], None, "ca= is for https:// URLs"),
    ([], '[[upstream]]\nname = "a"\nurl = "https://h/v1"\nca = "/no/such/ca.pem"\n', "cfg.toml:1: [[upstream]] upstream a: cannot read ca="),
])
def test_bad_routing_settings_are_one_clear_error(tmp_path, args, config, says):
    extra = []
    if config is not None:
        (tmp_path / "cfg.toml").write_text(config)
        extra = ["--config", str(tmp_path / "cfg.toml")]
    p = subprocess.run([conftest.OWL, "serve", "--model", conftest.MODEL, "--no-ledger", "--port", "0", *args, *extra],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.returncode != 0 and says in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "sk-x" not in p.stderr, p.stderr


@pytest.fixture(scope="module")
def drafting(pair, tmp_path_factory):
    """A front at --route-threshold 0.9: the probe runs, and MSG's draft scores under it."""
    _, up = pair
    home = fresh_home(tmp_path_factory, "front09")
    s = Server("--upstream", upstream_spec(up), "--upstream-timeout", "120", "--route-threshold", "0.9",
               "--capture", str(home / "capture.jsonl"), env={"ROUTE_KEY": KEY, "OWL_HOME": str(home)})
    s.home = home
    yield s
    s.stop()


def test_a_dropped_draft_is_kept_beside_the_teachers_answer(pair, drafting):
    """Under a threshold below 1 the probe runs: the dropped draft's score and busy time are
    in the ledger, and the draft sits beside the teacher's answer in the capture (a
    preference pair)."""
    front, up = pair
    # The threshold-0 front runs the same probe on the same model: MSG's score.
    score = float(chat(front.url).headers["x-owl-probe-score"])
    assert score < 0.9, score
    want = direct(up)
    r = chat(drafting.url)
    assert (r.status_code, r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == (200, "upstream", "low_confidence")
    assert abs(float(r.headers["x-owl-probe-score"]) - score) < 1e-3
    assert r.json()["choices"][0]["message"]["content"] == want
    rec = ledger_records(drafting.home)[-1]
    assert abs(rec["probe_score"] - score) < 1e-3 and rec["decode_s"] + rec["prefill_s"] > 0
    assert abs(rec["cost_usd"] - rec["upstream_usd"] - (rec["prefill_s"] + rec["decode_s"]) * 0.0245 / 3600) < 1e-12
    deadline = time.time() + 30
    while time.time() < deadline and drafting.metrics().get("owl_capture_records_total", 0) < 1:
        time.sleep(0.1)
    meta = json.loads((drafting.home / "capture.jsonl").read_text().splitlines()[0])["metadata"]
    assert meta["reason"] == "low_confidence" and abs(meta["probe_score"] - score) < 1e-3
    assert meta["local_draft"] and meta["local_draft"] != want


def test_upstream_killed_falls_back_locally_and_key_never_leaks(pair, escalating):
    front, up = pair
    up.stop()
    r = chat(escalating.url)
    assert (r.status_code, r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == (200, "local", "upstream_error")
    assert ledger_records(escalating.home)[-1]["reason"] == "upstream_error"
    r = chat(front.url, headers={"x-owl-route": "upstream"})
    assert (r.status_code, r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == (200, "local", "upstream_error")
    assert r.json()["choices"][0]["message"]["content"]
    assert streamed(front.url, headers={"x-owl-route": "upstream"})
    assert 'owl_route_requests_total{route="local",reason="upstream_error"}' in rawhttp.get(front.url + "/metrics").text
    for s in [front, escalating]:
        assert KEY not in "".join(s.log)
        for f in [*(s.home / "ledger").iterdir(), s.home / "capture.jsonl"]:
            if f.exists():
                assert KEY not in f.read_text()
