"""Routing through two real `owl serve` processes on loopback: a front with
smollm2-135m-instruct and an upstream with qwen2.5-coder-0.5b-instruct that
requires a (fake) key the front reads from its environment."""

import json
import time

import pytest

import rawhttp
import conftest
from conftest import Server

UP_MODEL = "qwen2.5-coder-0.5b-instruct"
KEY = "sk-fake-route-key-4f1c9"
MSG = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module")
def pair():
    front_model, conftest.MODEL = conftest.MODEL, UP_MODEL  # Server passes conftest.MODEL as --model
    try:
        up = Server("--api-key", KEY, "--no-ledger")
    finally:
        conftest.MODEL = front_model
    front = Server("--no-ledger", "--upstream", f"big={up.url}/v1,key_env=ROUTE_KEY,model={UP_MODEL}",
                   "--upstream-timeout", "120", "--route-max-local-tokens", "200",
                   env={"ROUTE_KEY": KEY})
    yield front, up
    front.stop()
    up.stop()


def chat(url, headers=None, **kw):
    body = {"messages": MSG, "max_tokens": 12, "temperature": 0, **kw}
    return rawhttp.post(url + "/v1/chat/completions", json=body, headers=headers or {})


def streamed(url, headers=None):
    body = {"messages": MSG, "max_tokens": 12, "temperature": 0, "stream": True}
    text = ""
    with rawhttp.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for ch in json.loads(line[6:])["choices"]:
                    text += ch["delta"].get("content") or ""
    return text


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
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == ("local", "default")


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
    assert 'owl_route_requests_total{route="local",reason="default"}' in text


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


def test_upstream_killed_falls_back_locally_and_key_never_leaks(pair):
    front, up = pair
    up.stop()
    r = chat(front.url, headers={"x-owl-route": "upstream"})
    assert (r.status_code, r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == (200, "local", "upstream_error")
    assert r.json()["choices"][0]["message"]["content"]
    assert streamed(front.url, headers={"x-owl-route": "upstream"})
    assert 'owl_route_requests_total{route="local",reason="upstream_error"}' in rawhttp.get(front.url + "/metrics").text
    assert KEY not in "".join(front.log)
