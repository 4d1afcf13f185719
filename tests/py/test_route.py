"""Routing through real `owl serve` processes on loopback: fronts with
smollm2-135m-instruct and an upstream with qwen2.5-coder-0.5b-instruct that
requires a (fake) key the fronts read from their environment. One front probes
with --route-threshold 0 (everything stays local), the other with 1 (everything
escalates); each keeps a ledger in an OWL_HOME of its own."""

import json
import subprocess
import time

import pytest

import rawhttp
import conftest
from conftest import Server, stream_text
from test_cost import fresh_home, ledger_records

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
        got = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
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


def test_threshold_one_escalates_and_no_draft_reaches_the_client(pair, escalating):
    _, up = pair
    want = direct(up)
    r = chat(escalating.url)
    assert r.status_code == 200
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"], r.headers["x-owl-upstream"]) == \
        ("upstream", "low_confidence", "big")
    assert r.json()["choices"][0]["message"]["content"] == want
    usage = r.json()["usage"]
    # A streaming client gets exactly the upstream's answer: nothing of the dropped draft.
    text, headers = stream_text(escalating.url, {"messages": MSG, "max_tokens": 12, "temperature": 0, "stream": True})
    assert text == want and headers["x-owl-route-reason"] == "low_confidence"
    counts = route_counts(escalating.url)
    assert counts['{route="upstream",reason="low_confidence"}'] == 2
    recs = ledger_records(escalating.home)
    assert len(recs) == 2
    for rec in recs:
        assert (rec["route"], rec["reason"], rec["upstream"], rec["model"]) == ("upstream", "low_confidence", "big", UP_MODEL)
        assert 0 <= rec["probe_score"] <= 1
        assert (rec["prompt_tokens"], rec["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
        # price = "gpt-4.1-mini" ($0.40 / $1.60 per 1M) on the upstream's tokens, plus the
        # dropped draft's busy time at this machine's rate.
        want_usd = (usage["prompt_tokens"] * 0.40 + usage["completion_tokens"] * 1.60) / 1e6
        assert abs(rec["upstream_usd"] - want_usd) < 1e-15 and rec["decode_s"] + rec["prefill_s"] > 0
        assert abs(rec["cost_usd"] - rec["upstream_usd"] - (rec["prefill_s"] + rec["decode_s"]) * 0.0245 / 3600) < 1e-12
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


def capture_records(s, n):
    """The capture file once its writer has written `n` records."""
    deadline = time.time() + 30
    while time.time() < deadline and s.metrics().get("owl_capture_records_total", 0) < n:
        time.sleep(0.1)
    path = s.home / "capture.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_capture_keeps_the_teachers_answers_for_distillation(pair, escalating):
    import jsonschema

    _, up = pair
    # test_threshold_one... left two (non-streamed and streamed); completions are not captured.
    recs = capture_records(escalating, 2)
    assert len(recs) == 2
    want = direct(up)
    for rec in recs:
        jsonschema.validate(rec, FINE_TUNING)
        assert rec["messages"][:-1] == MSG
        assert rec["messages"][-1] == {"role": "assistant", "content": want, "weight": 1}
        meta = rec["metadata"]
        assert (meta["teacher"], meta["reason"]) == (UP_MODEL, "low_confidence")
        assert 0 <= meta["probe_score"] <= 1 and meta["local_draft"] and meta["local_draft"] != want
        assert meta["usage"]["completion_tokens"] >= 1 and meta["id"].startswith("chatcmpl-")
    turns = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"}, *MSG]
    assert chat(escalating.url, headers={"x-owl-capture": "off"}, messages=turns).status_code == 200
    assert chat(escalating.url, headers={"x-owl-route": "upstream"}, messages=turns).status_code == 200
    recs = capture_records(escalating, 3)
    assert len(recs) == 3  # the opted-out request is not there
    jsonschema.validate(recs[2], FINE_TUNING)
    assert recs[2]["messages"][1] == {"role": "assistant", "content": "Hello!", "weight": 0}
    assert recs[2]["metadata"]["reason"] == "header" and recs[2]["metadata"]["local_draft"] is None
    assert (escalating.home / "capture.jsonl").stat().st_mode & 0o777 == 0o600
    # --capture-all: local answers too, streamed or not, under their own reason and model.
    local = chat(escalating.url, headers={"x-owl-route": "local"}).json()["choices"][0]["message"]["content"]
    assert streamed(escalating.url, headers={"x-owl-route": "local"}) == local
    recs = capture_records(escalating, 5)
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
    assert [json.loads(line) for line in out.stdout.splitlines()] == [{"messages": r["messages"]} for r in recs]
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
