"""Tool calls through the router, with test_route's two real servers: a front with
smollm2-135m-instruct (its template has no tools: owl's generic tool format) and an
upstream with qwen2.5-coder-0.5b-instruct (Hermes-style calls). Answered locally,
through the probe, or by the upstream, a request with `tools` gets the same
OpenAI `tool_calls` shape; a call streamed through the router keeps the
upstream's deltas; the ledger records both routes; a front at --route-threshold 1
escalates without a probe and captures the teacher's calls."""

import json
import time

import jsonschema
import openai
import pytest

from conftest import Server
from test_cost import fresh_home, ledger_records
from test_route import KEY, UP_MODEL, pair, upstream_spec  # noqa: F401 (pair is a fixture)
from test_tools import ASK, TOOLS, TWO_CITIES

SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


@pytest.fixture(scope="module")
def always(pair, tmp_path_factory):
    """A front at --route-threshold 1 that captures what its upstream answers."""
    _, up = pair
    home = fresh_home(tmp_path_factory, "front-always")
    s = Server("--upstream", upstream_spec(up), "--upstream-timeout", "120", "--route-threshold", "1",
               "--capture", str(home / "capture.jsonl"), env={"ROUTE_KEY": KEY, "OWL_HOME": str(home)})
    s.home = home
    yield s
    s.stop()


def sdk(url, key="none"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=300)


def ask(url, key="none", headers=None, **kw):
    # One call: with parallel calls allowed, SmolLM2 repeats its call until max_tokens.
    body = {"model": "any", "messages": ASK, "tools": TOOLS, "tool_choice": "required",
            "parallel_tool_calls": False, "temperature": 0, "max_tokens": 80, **kw}
    return sdk(url, key).chat.completions.with_raw_response.create(**body, extra_headers=headers or {})


def calls(choice):
    """The choice's calls as OpenAI shapes them, each with arguments that parse and
    follow its function's `parameters`: [(name, arguments text)]."""
    m = choice.message
    assert choice.finish_reason == "tool_calls" and not m.content and m.tool_calls, choice
    out = []
    for c in m.tool_calls:
        assert c.type == "function" and c.id.startswith("call_"), c
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])
        out.append((c.function.name, c.function.arguments))
    return out


def stream(url, key="none", headers=None, **kw):
    """The SDK's own stream helper: the assembled calls, and every tool-call delta."""
    body = {"model": "any", "messages": ASK, "tools": TOOLS, "tool_choice": "required",
            "parallel_tool_calls": False, "temperature": 0, "max_tokens": 80, "stream_options": {"include_usage": True}, **kw}
    deltas = []
    with sdk(url, key).chat.completions.stream(**body, extra_headers=headers or {}) as s:
        for ev in s:
            if ev.type == "chunk" and ev.chunk.choices:
                deltas += ev.chunk.choices[0].delta.tool_calls or []
        final = s.get_final_completion()
    return calls(final.choices[0]), deltas, final.usage


def fragments(deltas):
    """Per call index: (name, the arguments fragments after the first delta)."""
    out = {}
    for d in deltas:
        if d.id is not None:
            assert d.type == "function" and d.function.name and d.function.arguments == "", d
            out[d.index] = (d.function.name, [])
        else:
            assert d.function.name is None, d
            out[d.index][1].append(d.function.arguments)
    return out


def test_local_and_upstream_tool_calls_have_one_shape(pair):
    front, up = pair
    direct = calls(ask(up.url, KEY).parse().choices[0])
    assert [n for n, _ in direct] == ["get_weather"]
    r = ask(front.url, headers={"x-owl-route": "upstream"})
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == ("upstream", "header")
    assert calls(r.parse().choices[0]) == direct
    r = ask(front.url, headers={"x-owl-route": "local"})
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == ("local", "header")
    local = calls(r.parse().choices[0])
    # Through the probe (threshold 0): the same call as the forced local answer.
    r = ask(front.url)
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == ("local", "confident")
    assert 0 <= float(r.headers["x-owl-probe-score"]) <= 1
    assert calls(r.parse().choices[0]) == local and r.parse().choices[0].logprobs is None
    # A named function keeps its shape through the upstream (parallel calls: the stream test).
    named = {"type": "function", "function": {"name": "get_time"}}
    r = ask(front.url, headers={"x-owl-route": "upstream"}, tool_choice=named)
    assert [n for n, _ in calls(r.parse().choices[0])] == ["get_time"]


def test_tool_call_streams_through_the_router_keep_their_deltas(pair):
    front, up = pair
    want, direct_deltas, direct_usage = stream(up.url, KEY)
    got, deltas, usage = stream(front.url, headers={"x-owl-route": "upstream"})
    assert got == want == calls(ask(up.url, KEY).parse().choices[0])
    assert fragments(deltas) == fragments(direct_deltas)
    assert all(len(parts) > 2 for _, parts in fragments(deltas).values())  # fragments, not one blob
    assert usage.completion_tokens == direct_usage.completion_tokens
    # Two calls keep their own index through the relay.
    want2, d2, _ = stream(up.url, KEY, messages=TWO_CITIES, max_tokens=120, parallel_tool_calls=True)
    got2, r2, _ = stream(front.url, headers={"x-owl-route": "upstream:big"}, messages=TWO_CITIES, max_tokens=120, parallel_tool_calls=True)
    assert got2 == want2 and fragments(r2) == fragments(d2) and sorted(fragments(r2)) == [0, 1]
    # Streamed locally, through the probe, the call equals the non-streamed one.
    local, local_deltas, _ = stream(front.url)
    assert local == calls(ask(front.url, headers={"x-owl-route": "local"}).parse().choices[0])
    assert all(len(parts) > 2 for _, parts in fragments(local_deltas).values())


def test_the_ledger_records_tool_calls_on_both_routes(pair):
    front, _ = pair
    recs = ledger_records(front.home)
    routes = {(x["route"], x["reason"]) for x in recs}
    assert routes >= {("upstream", "header"), ("local", "header"), ("local", "confident")}, routes
    for x in recs:
        assert x["completion_tokens"] >= 1 and x["cost_usd"] > 0, x
        if x["route"] == "upstream":
            assert x["upstream"] == "big" and x["model"] == UP_MODEL and x["upstream_usd"] > 0, x


def test_threshold_one_escalates_tool_calls_without_a_probe(pair, always):
    _, up = pair
    want = calls(ask(up.url, KEY).parse().choices[0])
    before = always.metrics()
    r = ask(always.url)
    assert (r.headers["x-owl-route"], r.headers["x-owl-route-reason"]) == ("upstream", "low_confidence")
    assert "x-owl-probe-score" not in r.headers
    assert calls(r.parse().choices[0]) == want
    got, _, _ = stream(always.url)
    assert got == want
    after = always.metrics()
    # No probe: the local model generated nothing and nothing was cancelled.
    for m in ["owl_generated_tokens_total", "owl_prompt_tokens_total", "owl_requests_cancelled_total"]:
        assert after.get(m, 0) == before.get(m, 0), m
    recs = ledger_records(always.home)
    assert len(recs) == 2
    for x in recs:
        assert (x["route"], x["reason"], x["upstream"]) == ("upstream", "low_confidence", "big")
        assert "probe_score" not in x and x["completion_tokens"] >= 1
        assert x.get("prefill_s", 0) + x.get("decode_s", 0) == 0 and x["cost_usd"] == x["upstream_usd"]
    # The teacher's calls are captured for distillation, with the request's tools.
    deadline = time.time() + 30
    while time.time() < deadline and always.metrics().get("owl_capture_records_total", 0) < 2:
        time.sleep(0.1)
    caps = [json.loads(line) for line in (always.home / "capture.jsonl").read_text().splitlines()]
    assert len(caps) == 2
    for c in caps:
        last = c["messages"][-1]
        assert last["role"] == "assistant" and last["weight"] == 1 and c["tools"] == TOOLS
        assert [(t["function"]["name"], t["function"]["arguments"]) for t in last["tool_calls"]] == want
        assert c["metadata"]["probe_score"] is None and c["metadata"]["local_draft"] is None
