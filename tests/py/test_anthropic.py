"""Anthropic's Messages API (`/v1/messages`) through the official `anthropic`
SDK against a real `owl serve`: text on smollm2-135m-instruct (the session
server), tools on qwen2.5-coder-0.5b-instruct (a server of its own)."""

import json

import anthropic
import pytest

import conftest
import rawhttp
from conftest import MODEL, Server

QWEN = "qwen2.5-coder-0.5b-instruct"
KEY = "sk-ant-owl-test-31c9"
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def ant(server):
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def qwen():
    """qwen2.5-coder-0.5b-instruct with a key, so x-api-key auth is exercised too."""
    saved, conftest.MODEL = conftest.MODEL, QWEN  # Server passes conftest.MODEL as --model
    try:
        s = Server("--no-ledger", "--api-key", KEY)
    finally:
        conftest.MODEL = saved
    yield s
    s.stop()


# This SDK has no sampling arguments any more; owl still reads them from the body.
T0 = {"temperature": 0}


def text_of(msg):
    return "".join(b.text for b in msg.content if b.type == "text")


def test_create_and_stream_agree(ant):
    kw = dict(model="claude-sonnet-4-5", max_tokens=24, extra_body=T0, system="You are terse.",
              messages=[{"role": "user", "content": [{"type": "text", "text": "Name three fruits."}]}])
    msg = ant.messages.create(**kw)
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == "claude-sonnet-4-5"
    assert msg.id.startswith("msg_")
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.input_tokens > 5 and 0 < msg.usage.output_tokens <= 24
    text = text_of(msg)
    assert text.strip()

    with ant.messages.stream(**kw) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == text == text_of(final)
    assert final.stop_reason == msg.stop_reason
    assert final.usage.output_tokens == msg.usage.output_tokens
    # As Anthropic counts: input_tokens + cache_read_input_tokens is the whole prompt
    # (the stream's repeat of the prompt is read from owl's prefix cache).
    def prompt(u):
        return u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens
    assert prompt(final.usage) == prompt(msg.usage)
    assert final.usage.cache_read_input_tokens > 0


def test_stream_event_order(ant):
    events = list(ant.messages.create(model=MODEL, max_tokens=8, extra_body=T0, stream=True,
                                      messages=[{"role": "user", "content": "Count from 1 to 20, separated by commas."}]))
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[1] == "content_block_start"
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(types[2:-3]) == {"content_block_delta"}
    assert events[-2].delta.stop_reason == "max_tokens" and events[-2].usage.output_tokens == 8


def test_max_tokens_stop_sequences_and_sampling(ant):
    msgs = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
    full = text_of(ant.messages.create(model=MODEL, max_tokens=40, extra_body=T0, messages=msgs))
    assert "\n" in full.strip()
    cut = ant.messages.create(model=MODEL, max_tokens=40, extra_body=T0, stop_sequences=["\n"], messages=msgs)
    assert text_of(cut) == full.split("\n")[0] != ""
    short = ant.messages.create(model=MODEL, max_tokens=3, extra_body=T0, messages=msgs)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3
    # top_k = 1 is greedy whatever the temperature.
    greedy = ant.messages.create(model=MODEL, max_tokens=12, extra_body={"temperature": 1, "top_k": 1, "top_p": 0.9}, messages=msgs)
    assert text_of(greedy) == full[: len(text_of(greedy))]


def test_multi_turn_and_count_tokens(ant, server):
    msgs = [{"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello Ada."}]},
            {"role": "user", "content": "What is my name?"}]
    n = ant.messages.count_tokens(model=MODEL, system="Be brief.", messages=msgs).input_tokens
    msg = ant.messages.create(model=MODEL, max_tokens=4, extra_body=T0, system="Be brief.", messages=msgs)
    assert n == msg.usage.input_tokens + msg.usage.cache_read_input_tokens > 10
    longer = ant.messages.count_tokens(model=MODEL, system="Be brief. " * 10, messages=msgs).input_tokens
    assert longer > n


def test_errors_in_anthropic_shape(ant, server):
    with pytest.raises(anthropic.BadRequestError) as e:
        ant.messages.create(model=MODEL, max_tokens=0, messages=[{"role": "user", "content": "x"}])
    assert "max_tokens" in str(e.value)
    r = rawhttp.post(server.url + "/v1/messages", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    r = rawhttp.post(server.url + "/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["type"] == "error", r.text
    with pytest.raises(anthropic.BadRequestError) as e:
        ant.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}])
    assert "image" in str(e.value)


def test_x_api_key_and_tools(qwen):
    bad = anthropic.Anthropic(base_url=qwen.url, api_key="wrong", max_retries=0, timeout=120)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model=QWEN, max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["error"]["type"] == "authentication_error"
    c = anthropic.Anthropic(base_url=qwen.url, api_key=KEY, max_retries=0, timeout=120)
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    msg = c.messages.create(model=QWEN, max_tokens=80, extra_body=T0, tools=[WEATHER],
                            tool_choice={"type": "any"}, messages=ask)
    assert msg.stop_reason == "tool_use", msg
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather"
    assert "paris" in json.dumps(uses[0].input).lower()

    with c.messages.stream(model=QWEN, max_tokens=80, extra_body=T0, tools=[WEATHER],
                           tool_choice={"type": "any"}, messages=ask) as s:
        streamed = s.get_final_message()
    s_uses = [b for b in streamed.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in s_uses] == [(u.name, u.input) for u in uses]
    assert streamed.stop_reason == "tool_use"

    # The result goes back as a tool_result block; with tool_choice none the tools leave
    # the prompt (as in test_tools.py), the call and its result stay, and the model answers in text.
    follow = ask + [{"role": "assistant", "content": [b.model_dump() for b in msg.content]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                                  "content": "Sunny, 21 degrees Celsius."}]}]
    answer = c.messages.create(model=QWEN, max_tokens=40, extra_body=T0, tools=[WEATHER],
                               tool_choice={"type": "none"}, messages=follow)
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert text_of(answer).strip() and not [b for b in answer.content if b.type == "tool_use"]
    bare = c.messages.count_tokens(model=QWEN, messages=ask).input_tokens
    assert answer.usage.input_tokens > bare + 20, (answer.usage, bare)
