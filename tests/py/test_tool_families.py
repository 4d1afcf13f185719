"""Tool calls for the Llama 3.x and Mistral families, which no model in the cache
speaks: a tiny random-weight model (`owl synth`) carrying a template of each
family's format (tests/py/templates) is served, and with `tool_choice` required or
a named function every call must parse and validate against its `parameters`.
The model's weights are noise, so the validity can only come from the mask."""

import json
import subprocess
from pathlib import Path

import jsonschema
import openai
import pytest

import conftest
from conftest import Server

TEMPLATES = Path(__file__).resolve().parent / "templates"
TRIP = {"type": "function", "function": {
    "name": "plan_trip", "description": "Plan a trip",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "by_train": {"type": "boolean"}},
        "required": ["city", "days"], "additionalProperties": False}}}
FLIGHT = {"type": "function", "function": {
    "name": "book_flight", "description": "Book a flight",
    "parameters": {"type": "object", "properties": {
        "to": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "seats": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 9},
                  "minItems": 1, "maxItems": 3}},
        "required": ["to", "seats"], "additionalProperties": False}}}
TOOLS = [TRIP, FLIGHT]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "Plan me a trip, then book the flight."}]


@pytest.fixture(scope="module", params=["llama3.1", "mistral"])
def family(request, tmp_path_factory):
    gguf = tmp_path_factory.mktemp(request.param) / "tiny.gguf"
    subprocess.run([conftest.OWL, "synth", "--arch", "llama", "--seed", "3",
                    "--chat-template", str(TEMPLATES / f"{request.param}-tools.jinja"), str(gguf)],
                   check=True, capture_output=True)
    saved, conftest.MODEL = conftest.MODEL, str(gguf)  # Server passes conftest.MODEL as --model
    try:
        s = Server("--ctx", "2048", "--parallel", "2", "--no-ledger")
    finally:
        conftest.MODEL = saved
    yield request.param, openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=120)
    s.stop()


def checked(choice, names):
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls, choice.message
    for c in calls:
        assert c.type == "function" and c.id.startswith("call_") and c.function.name in names, c
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])
    return [(c.function.name, c.function.arguments) for c in calls]


@pytest.mark.parametrize("choice, names", [
    ("required", {"plan_trip", "book_flight"}),
    ({"type": "function", "function": {"name": "book_flight"}}, {"book_flight"}),
])
def test_calls_parse_and_follow_parameters(family, choice, names):
    name, client = family
    body = {"model": "tiny", "messages": ASK, "tools": TOOLS, "tool_choice": choice,
            "parallel_tool_calls": False, "max_tokens": 300}  # one call: noise would list calls to the end
    for temperature, seed in [(0, None), (1, 1), (1, 2)]:
        r = client.chat.completions.create(**body, temperature=temperature, seed=seed)
        checked(r.choices[0], names)
    # Streamed, assembled by the SDK's own helper: the same calls, byte for byte.
    plain = checked(client.chat.completions.create(**body, temperature=0).choices[0], names)
    with client.chat.completions.stream(**body, temperature=0) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert checked(final.choices[0], names) == plain, name
