"""Tool calls through the OpenAI SDK on qwen2.5-coder-0.5b-instruct (a template
that renders `tools`, Hermes-style calls): one module server. Every call's
arguments must parse and validate against its function's `parameters`; the
streamed calls, assembled by the SDK's own stream helper, equal the
non-streamed ones at temperature 0."""

import json

import jsonschema
import openai
import pytest

import conftest
from conftest import Server

MODEL = "qwen2.5-coder-0.5b-instruct"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 40}},
                   "required": ["zone"], "additionalProperties": False}}}
TOOLS = [WEATHER, TIME]
ASK = [{"role": "user", "content": "What's the weather like in Paris right now?"}]


@pytest.fixture(scope="module")
def client():
    saved, conftest.MODEL = conftest.MODEL, MODEL  # Server passes conftest.MODEL as --model
    try:
        s = Server("--ctx", "4096", "--parallel", "2", "--no-ledger")
    finally:
        conftest.MODEL = saved
    yield openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=120)
    s.stop()


def chat(client, **kw):
    body = {"model": MODEL, "messages": ASK, "tools": TOOLS, "temperature": 0, "max_tokens": 80, **kw}
    return client.chat.completions.create(**body)


def checked_calls(message):
    """The message's calls, each with arguments that parse and follow its function's schema."""
    assert message.tool_calls, message
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    out = []
    for c in message.tool_calls:
        assert c.type == "function" and c.id.startswith("call_"), c
        args = json.loads(c.function.arguments)
        jsonschema.validate(args, schemas[c.function.name])
        out.append((c.function.name, args))
    return out


def test_weather_question_gives_one_call(client):
    r = chat(client)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = checked_calls(choice.message)
    assert [name for name, _ in calls] == ["get_weather"]
    assert "paris" in calls[0][1]["city"].lower()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_required_calls_a_tool_even_for_small_talk(client, seed):
    r = chat(client, messages=[{"role": "user", "content": "Hello! How are you?"}],
             tool_choice="required", temperature=1, seed=seed)
    assert r.choices[0].finish_reason == "tool_calls"
    checked_calls(r.choices[0].message)


def test_named_function_is_the_one_called(client):
    r = chat(client, tool_choice={"type": "function", "function": {"name": "get_time"}},
             parallel_tool_calls=False)
    calls = checked_calls(r.choices[0].message)
    assert [name for name, _ in calls] == ["get_time"]


def test_none_answers_in_text(client):
    r = chat(client, tool_choice="none")
    m = r.choices[0].message
    assert not m.tool_calls
    assert r.choices[0].finish_reason in ("stop", "length")
    assert m.content and "tool_call" not in m.content


def test_round_trip_answer_uses_the_tool_result(client):
    # call -> role "tool" result with its tool_call_id -> an answer grounded in the result.
    system = {"role": "system", "content": "You are a helpful assistant. After a tool returns its "
              "result, answer the user in one sentence that states the result."}
    first = chat(client, messages=[system] + ASK)
    call = first.choices[0].message.tool_calls[0]
    result = json.dumps({"temperature_c": 23, "sky": "sunny"})
    messages = [system] + ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    # `none`: the tools leave the prompt, the call and its result stay in it.
    r = chat(client, messages=messages, max_tokens=60, tool_choice="none")
    bare = chat(client, messages=[system] + ASK, max_tokens=1, tool_choice="none").usage.prompt_tokens
    assert r.usage.prompt_tokens > bare + 20, (r.usage, bare)
    m = r.choices[0].message
    assert not m.tool_calls and r.choices[0].finish_reason == "stop"
    assert "23" in m.content and "sunny" in m.content.lower(), m.content
    assert "tool_call" not in m.content and '"name"' not in m.content, m.content
    # `auto`: the small model may call again or answer; either way the answer is well formed.
    r = chat(client, messages=messages, max_tokens=60)
    m = r.choices[0].message
    if m.tool_calls:
        # Cut by max_tokens the answer says `length`, as OpenAI does; only whole calls are calls.
        assert r.choices[0].finish_reason in ("tool_calls", "length")
        checked_calls(m)
        if r.choices[0].finish_reason == "tool_calls":
            assert not m.content or "<tool_call>" not in m.content, m.content
    else:
        assert m.content


TWO_CITIES = [{"role": "user", "content": "Get the current weather for Paris, and also for Tokyo."}]


def test_two_independent_calls_in_one_response(client):
    r = chat(client, messages=TWO_CITIES, tool_choice="required", max_tokens=120)
    assert r.choices[0].finish_reason == "tool_calls"
    calls = checked_calls(r.choices[0].message)
    assert [name for name, _ in calls] == ["get_weather", "get_weather"], calls
    assert sorted(args["city"].lower() for _, args in calls) == ["paris", "tokyo"], calls
    ids = [c.id for c in r.choices[0].message.tool_calls]
    assert len(set(ids)) == 2, ids


def test_parallel_tool_calls_false_gives_at_most_one(client):
    r = chat(client, messages=TWO_CITIES, tool_choice="required", max_tokens=120,
             parallel_tool_calls=False)
    assert r.choices[0].finish_reason == "tool_calls"
    calls = checked_calls(r.choices[0].message)
    assert len(calls) == 1, calls
    r = chat(client, messages=TWO_CITIES, max_tokens=120, parallel_tool_calls=False)
    assert len(r.choices[0].message.tool_calls or []) <= 1, r.choices[0].message


@pytest.mark.parametrize("choice", ["auto", "required"])
def test_streamed_calls_equal_non_streamed(client, choice):
    plain_response = chat(client, tool_choice=choice)
    plain = plain_response.choices[0]
    body = {"model": MODEL, "messages": ASK, "tools": TOOLS, "temperature": 0, "max_tokens": 80,
            "tool_choice": choice, "stream_options": {"include_usage": True}}
    with client.chat.completions.stream(**body) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    streamed = final.choices[0]
    assert streamed.finish_reason == "tool_calls" == plain.finish_reason
    assert checked_calls(streamed.message) == checked_calls(plain.message)
    # The same text, not just the same JSON: both carry the model's own arguments.
    args = lambda m: [c.function.arguments for c in m.tool_calls]  # noqa: E731
    assert args(streamed.message) == args(plain.message)
    assert not streamed.message.content and final.usage.completion_tokens == plain_response.usage.completion_tokens


def test_streamed_content_before_a_call_has_no_markup(client):
    chunks = list(chat(client, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "<tool_call>" not in text and '{"name"' not in text
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    first = next(c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    assert first.index == 0 and first.id.startswith("call_") and first.function.name == "get_weather"
    assert first.function.arguments == ""


@pytest.mark.parametrize("kw, param", [
    ({"tool_choice": {"type": "function", "function": {"name": "get_stock_price"}}}, "tool_choice"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
])
def test_bad_tool_fields_are_400s_naming_the_field(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, **kw)
    assert e.value.body["param"] == param
    assert param.split("[")[0] in e.value.body["message"]


def test_streamed_arguments_come_in_fragments(client):
    """As OpenAI streams a call: a first delta with index, id, type and name and empty
    arguments, then argument fragments whose concatenation parses; two calls keep their
    own index."""
    chunks = list(chat(client, messages=TWO_CITIES, tool_choice="required", max_tokens=120,
                       stream=True))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    plain = checked_calls(chat(client, messages=TWO_CITIES, tool_choice="required",
                               max_tokens=120).choices[0].message)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    for i, (name, args) in enumerate(plain):
        mine = [d for d in deltas if d.index == i]
        head, rest = mine[0], mine[1:]
        assert head.id.startswith("call_") and head.type == "function", head
        assert head.function.name == name and head.function.arguments == "", head
        assert all(d.id is None and d.function.name is None for d in rest), rest
        assert len(rest) > 2, rest  # fragments, not the whole object in one delta
        assert json.loads("".join(d.function.arguments for d in rest)) == args


def test_streamed_tool_logprobs_equal_non_streamed(client):
    r = chat(client, logprobs=True, top_logprobs=2)
    assert r.choices[0].finish_reason == "tool_calls"
    want = [(t.token, round(t.logprob, 4)) for t in r.choices[0].logprobs.content]
    chunks = list(chat(client, logprobs=True, top_logprobs=2, stream=True))
    got = [(t.token, round(t.logprob, 4)) for c in chunks if c.choices and c.choices[0].logprobs
           for t in c.choices[0].logprobs.content]
    assert got == want and len(want) == r.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 for c in chunks if c.choices and c.choices[0].logprobs
               for t in c.choices[0].logprobs.content)


def test_streamed_call_cut_by_max_tokens_ends_with_length(client):
    chunks = list(chat(client, tool_choice="required", max_tokens=16, stream=True))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].function.name == "get_weather", deltas
    args = "".join(d.function.arguments or "" for d in deltas)
    with pytest.raises(json.JSONDecodeError):
        json.loads(args)
    assert chunks[-1].choices[0].finish_reason == "length"
    r = chat(client, tool_choice="required", max_tokens=16)
    assert r.choices[0].finish_reason == "length" and not r.choices[0].message.tool_calls


# Asked for it, the model writes its call's JSON across lines: the opener `{\n  "name": "`
# is its own text; once that fires the lazy trigger, the grammar holds the rest of the call
# to the compact form its arguments are checked in.
PRETTY = {"role": "system", "content": 'You are a helpful assistant. Format each function call like this example:\n'
          '<tool_call>\n{\n  "name": "function_name",\n  "arguments": {"arg": "value"}\n}\n</tool_call>'}


def test_a_pretty_printed_call_across_lines_is_parsed(client):
    import re

    r = chat(client, messages=[PRETTY] + ASK, logprobs=True)
    raw = "".join(t.token for t in r.choices[0].logprobs.content)  # the model's own output
    assert re.match(r'(```json)?\s*\{\n[ \t]+"name": "get_weather"', raw), raw
    assert "</tool_call>" in raw, raw
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None, choice
    calls = checked_calls(choice.message)
    assert calls[0][0] == "get_weather" and "paris" in calls[0][1]["city"].lower(), calls
    body = {"model": MODEL, "messages": [PRETTY] + ASK, "tools": TOOLS, "temperature": 0, "max_tokens": 80}
    with client.chat.completions.stream(**body) as stream:
        chunks = [ev.chunk for ev in stream if ev.type == "chunk"]
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert [c.function.arguments for c in final.choices[0].message.tool_calls] == \
        [c.function.arguments for c in choice.message.tool_calls]
    assert checked_calls(final.choices[0].message) == calls
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "<tool_call>" not in text and '"name"' not in text and "```" not in text, text
