"""Ollama's API through the official `ollama` Python client (and raw HTTP for
its NDJSON framing) against a real `owl serve` on smollm2-135m-instruct."""

import json

import ollama
import pytest

import conftest
import rawhttp
from conftest import CTX, EMBED_MODEL, MODEL, Server

QWEN = "qwen2.5-coder-0.5b-instruct"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

T0 = {"temperature": 0}
ASK = [{"role": "user", "content": "Name three fruits."}]


@pytest.fixture(scope="module")
def ol(server):
    return ollama.Client(host=server.url, timeout=120)


@pytest.fixture(scope="module")
def no_embedder():
    s = Server("--no-ledger", "--ctx", "1024")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def qwen():
    saved, conftest.MODEL = conftest.MODEL, QWEN  # Server passes conftest.MODEL as --model
    try:
        s = Server("--no-ledger", "--parallel", "2")
    finally:
        conftest.MODEL = saved
    yield ollama.Client(host=s.url, timeout=120)
    s.stop()


def test_version_tags_show_ps(ol, server):
    v = rawhttp.get(server.url + "/api/version").json()["version"]
    assert [int(x) for x in v.split(".")] >= [0, 5, 0]
    models = ol.list().models
    assert models[0].model == MODEL
    assert models[0].details.format == "gguf" and models[0].size > 0
    assert models[0].details.quantization_level and models[0].details.parameter_size.endswith("M")
    info = ol.show(MODEL)
    assert "completion" in info.capabilities
    assert info.details.family == "llama"
    emb = ol.show(EMBED_MODEL)
    assert emb.capabilities == ["embedding"]
    running = ol.ps().models
    assert running[0].model == MODEL and running[0].context_length == CTX


def test_chat_stream_equals_non_stream(ol):
    one = ol.chat(model=MODEL, messages=ASK, options={**T0, "num_predict": 24}, stream=False)
    assert one.done and one.done_reason in ("stop", "length")
    assert one.message.role == "assistant" and one.message.content.strip()
    assert one.prompt_eval_count > 5 and 0 < one.eval_count <= 24
    for f in ("total_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(getattr(one, f), int) and getattr(one, f) > 0, f
    # Nanoseconds: the whole took longer than generating, which took over a microsecond a token.
    assert one.total_duration >= one.eval_duration > 1000 * one.eval_count

    parts = list(ol.chat(model=MODEL, messages=ASK, options={**T0, "num_predict": 24}, stream=True))
    assert len(parts) > 2 and all(not p.done for p in parts[:-1])
    last = parts[-1]
    assert last.done and last.done_reason == one.done_reason and last.message.content == ""
    assert last.eval_count == one.eval_count and last.prompt_eval_count == one.prompt_eval_count
    assert last.total_duration > 0 and last.eval_duration > 0
    assert "".join(p.message.content for p in parts) == one.message.content


def test_generate_templated_and_raw(ol):
    one = ol.generate(model=MODEL, prompt="Name three fruits.", options={**T0, "num_predict": 24})
    chat = ol.chat(model=MODEL, messages=ASK, options={**T0, "num_predict": 24}, stream=False)
    # Not raw: the prompt is the user's turn of the chat template.
    assert one.response == chat.message.content and one.done
    streamed = list(ol.generate(model=MODEL, prompt="Name three fruits.", options={**T0, "num_predict": 24}, stream=True))
    assert "".join(p.response for p in streamed) == one.response and streamed[-1].done
    raw = ol.generate(model=MODEL, prompt="One, two, three,", raw=True, options={**T0, "num_predict": 6})
    assert raw.response.strip() and raw.eval_count == 6 and raw.done_reason == "length"
    # An empty prompt is ollama's "load the model": already loaded.
    load = ol.generate(model=MODEL, prompt="")
    assert load.done and load.done_reason == "load"


def test_options(ol):
    msgs = [{"role": "user", "content": "Count from 1 to 20, one number per line."}]
    short = ol.chat(model=MODEL, messages=msgs, options={**T0, "num_predict": 5})
    assert short.eval_count == 5 and short.done_reason == "length"
    full = ol.chat(model=MODEL, messages=msgs, options={**T0, "num_predict": 40}).message.content
    assert "\n" in full.strip()
    cut = ol.chat(model=MODEL, messages=msgs, options={**T0, "num_predict": 40, "stop": ["\n"]})
    assert cut.message.content == full.split("\n")[0] != ""
    hot = {"temperature": 1.5, "top_p": 1.0, "top_k": 0, "num_predict": 16}
    a = ol.chat(model=MODEL, messages=ASK, options={**hot, "seed": 11}).message.content
    b = ol.chat(model=MODEL, messages=ASK, options={**hot, "seed": 11}).message.content
    assert a == b
    greedy = ol.chat(model=MODEL, messages=ASK, options={"temperature": 1.5, "top_k": 1, "num_predict": 16})
    assert greedy.message.content == ol.chat(model=MODEL, messages=ASK, options={**T0, "num_predict": 16}).message.content


def test_num_ctx_is_honoured_or_refused(ol, server):
    with pytest.raises(ollama.ResponseError) as e:
        ol.chat(model=MODEL, messages=ASK, options={"num_ctx": CTX * 4})
    assert e.value.status_code == 400 and "num_ctx" in e.value.error and str(CTX) in e.value.error
    prompt = ol.chat(model=MODEL, messages=ASK, options={**T0, "num_predict": 1}).prompt_eval_count
    with pytest.raises(ollama.ResponseError) as e:
        ol.chat(model=MODEL, messages=ASK, options={"num_ctx": prompt - 1})
    assert e.value.status_code == 400 and "never truncates" in e.value.error
    # Room for 8 tokens after the prompt: generation stops when num_ctx is full.
    r = ol.chat(model=MODEL, messages=[{"role": "user", "content": "Count from 1 to 50."}],
                options={**T0, "num_ctx": prompt + 8})
    assert r.done_reason == "length" and r.prompt_eval_count + r.eval_count == prompt + 8


def test_embed(ol, no_embedder):
    r = ol.embed(model=EMBED_MODEL, input=["an owl", "a cat"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 768
    assert r.embeddings[0] != r.embeddings[1] and r.prompt_eval_count > 0
    one = ol.embed(model=EMBED_MODEL, input="an owl")
    assert one.embeddings[0] == pytest.approx(r.embeddings[0], abs=1e-5)
    with pytest.raises(ollama.ResponseError) as e:
        ollama.Client(host=no_embedder.url, timeout=60).embed(model=EMBED_MODEL, input="an owl")
    assert e.value.status_code == 400 and "--embedding-model" in e.value.error


def test_ndjson_framing_and_errors(server):
    # ollama streams by default.
    r = rawhttp.post(server.url + "/api/chat", json={"model": MODEL, "messages": ASK, "options": {**T0, "num_predict": 6}})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert len(lines) > 2 and [x["done"] for x in lines].count(True) == 1 and lines[-1]["done"]
    assert all(x["model"] == MODEL and x["created_at"].endswith("Z") for x in lines)
    assert lines[-1]["done_reason"] == "length" and lines[-1]["eval_count"] == 6
    r = rawhttp.post(server.url + "/api/chat", json={"model": MODEL, "messages": "hi"})
    assert r.status_code == 400 and isinstance(r.json()["error"], str), r.text
    r = rawhttp.post(server.url + "/api/chat", json={"model": MODEL, "messages": ASK, "options": {"num_predict": 0}})
    assert r.status_code == 400 and "num_predict" in r.json()["error"]
    # What owl cannot honour is refused, not dropped.
    for field, value in [("suffix", "return x"), ("images", ["AAAA"]), ("context", [1, 2, 3])]:
        r = rawhttp.post(server.url + "/api/generate", json={"model": MODEL, "prompt": "def f():", field: value})
        assert r.status_code == 400 and field in r.json()["error"], r.text
    r = rawhttp.post(server.url + "/api/chat", json={"model": MODEL, "messages": [{**ASK[0], "images": ["AAAA"]}]})
    assert r.status_code == 400 and "images" in r.json()["error"], r.text


def test_format_schema(ol):
    schema = {"type": "object", "properties": {"color": {"type": "string", "maxLength": 12}},
              "required": ["color"], "additionalProperties": False}
    r = ol.chat(model=MODEL, messages=[{"role": "user", "content": "Name a color as JSON."}], format=schema,
                options={**T0, "num_predict": 40})
    assert r.done_reason == "stop", r
    v = json.loads(r.message.content)
    assert set(v) == {"color"} and isinstance(v["color"], str)


def test_tools(qwen):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    opts = {**T0, "num_predict": 80}
    r = qwen.chat(model=QWEN, messages=ask, tools=[WEATHER], options=opts)
    calls = r.message.tool_calls
    assert calls and calls[0].function.name == "get_weather", r
    assert "paris" in json.dumps(dict(calls[0].function.arguments)).lower()
    assert qwen.show(QWEN).capabilities == ["completion", "tools"]
    parts = list(qwen.chat(model=QWEN, messages=ask, tools=[WEATHER], options=opts, stream=True))
    s_calls = [c for p in parts for c in (p.message.tool_calls or [])]
    assert [(c.function.name, dict(c.function.arguments)) for c in s_calls] == \
        [(c.function.name, dict(c.function.arguments)) for c in calls]
    assert parts[-1].done
    # The call and its result go back; the template renders both (more prompt tokens).
    follow = ask + [r.message, {"role": "tool", "content": "Sunny, 21 degrees Celsius.", "tool_name": "get_weather"}]
    again = qwen.chat(model=QWEN, messages=follow, tools=[WEATHER], options=opts)
    assert again.done and again.prompt_eval_count > r.prompt_eval_count + 10
