"""OpenAI's Responses API (`/v1/responses`) through the official SDK's
`client.responses`, on qwen2.5-coder-0.5b-instruct (tools need a template that
renders them): text equals the chat answer for the same conversation, the
stream's deltas and final response equal the non-streamed one, function calls
round-trip, JSON Schema output is enforced, `previous_response_id` continues a
stored conversation (retrieve, input items, delete, `store: false`), unserved
features are refused."""

import json

import jsonschema
import openai
import pytest

import conftest
from conftest import Server

MODEL = "qwen2.5-coder-0.5b-instruct"
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False}}


@pytest.fixture(scope="module")
def client():
    saved, conftest.MODEL = conftest.MODEL, MODEL  # Server passes conftest.MODEL as --model
    try:
        s = Server("--ctx", "2048", "--parallel", "2", "--no-ledger")
    finally:
        conftest.MODEL = saved
    yield openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=120)
    s.stop()


def test_text_equals_chat_and_stream(client):
    kw = dict(model=MODEL, temperature=0, max_output_tokens=24)
    r = client.responses.create(instructions="Answer in one sentence.", input="What is the capital of France?", **kw)
    chat = client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=24,
        messages=[{"role": "system", "content": "Answer in one sentence."},
                  {"role": "user", "content": "What is the capital of France?"}])
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.output_text == chat.choices[0].message.content and "Paris" in r.output_text
    assert r.usage.input_tokens == chat.usage.prompt_tokens
    assert r.usage.output_tokens == chat.usage.completion_tokens
    assert r.status == ("incomplete" if chat.choices[0].finish_reason == "length" else "completed")

    events = list(client.responses.create(instructions="Answer in one sentence.",
                                          input="What is the capital of France?", stream=True, **kw))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == r.output_text == events[-1].response.output_text


def test_function_call_round_trip(client):
    ask = [{"role": "user", "content": "What's the weather like in Paris right now?"}]
    r = client.responses.create(model=MODEL, input=ask, tools=[WEATHER], tool_choice="required",
                                temperature=0, max_output_tokens=80)
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather", r.output
    args = json.loads(calls[0].arguments)
    jsonschema.validate(args, WEATHER["parameters"])

    # The streamed call, assembled by the SDK's stream helper, equals the non-streamed one.
    with client.responses.stream(model=MODEL, input=ask, tools=[WEATHER], tool_choice="required",
                                 temperature=0, max_output_tokens=80) as s:
        arg_deltas = "".join(e.delta for e in s if e.type == "response.function_call_arguments.delta")
        final = s.get_final_response()
    streamed = [o for o in final.output if o.type == "function_call"]
    # Streamed arguments are the model's own text, non-streamed ones compact JSON: equal as JSON.
    assert [c.name for c in streamed] == [c.name for c in calls]
    assert [json.loads(c.arguments) for c in streamed] == [json.loads(c.arguments) for c in calls]
    assert arg_deltas == "".join(c.arguments for c in streamed)

    follow = ask + [{"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
                     "arguments": calls[0].arguments},
                    {"type": "function_call_output", "call_id": calls[0].call_id,
                     "output": json.dumps({"city": args["city"], "temperature_c": 17, "sky": "sunny"})}]
    # `none`: the call and its result stay in the prompt; the answer is text that uses the result.
    answer = client.responses.create(model=MODEL, input=follow, tools=[WEATHER], tool_choice="none",
                                     temperature=0, max_output_tokens=60)
    assert [o.type for o in answer.output] == ["message"]
    assert "17" in answer.output_text, answer.output_text
    # `auto`: the small model may call again or answer; either way no call markup is left as text.
    again = client.responses.create(model=MODEL, input=follow, tools=[WEATHER], temperature=0,
                                    max_output_tokens=60)
    for o in again.output:
        if o.type == "function_call":
            jsonschema.validate(json.loads(o.arguments), WEATHER["parameters"])
    # Cut by max_output_tokens the response is `incomplete`; complete, no call markup is left as text.
    if again.status == "completed":
        assert "<tool_call>" not in again.output_text and '"arguments"' not in again.output_text, again.output


def test_json_schema_output_is_enforced(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    r = client.responses.create(model=MODEL, input="Name a large city and its population.", temperature=0,
                                max_output_tokens=60,
                                text={"format": {"type": "json_schema", "name": "city", "schema": schema}})
    jsonschema.validate(json.loads(r.output_text), schema)


@pytest.mark.parametrize("kw, param", [
    (dict(conversation="conv_123"), "conversation"),
    (dict(tools=[{"type": "web_search"}]), "tools[0].type"),
    (dict(text={"format": {"type": "yaml"}}), "text.format"),
])
def test_unserved_features_are_400s_naming_the_field(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input="hi", max_output_tokens=4, **kw)
    assert e.value.body["param"] == param, e.value.body


def test_previous_response_id_continues_the_stored_conversation(client):
    kw = dict(model=MODEL, temperature=0)
    first = "My name is Zed and I live in Oslo. Reply with one short sentence."
    r1 = client.responses.create(input=first, max_output_tokens=24, **kw)
    assert r1.store is True and r1.previous_response_id is None
    ask = "What is my name? Answer with the name only."
    r2 = client.responses.create(previous_response_id=r1.id, input=ask, max_output_tokens=8, **kw)
    assert r2.previous_response_id == r1.id
    # The follow-up is answered from the whole conversation: the same as chat
    # given the earlier turn and the answer it got.
    chat = client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=8,
        messages=[{"role": "user", "content": first},
                  {"role": "assistant", "content": r1.output_text},
                  {"role": "user", "content": ask}])
    assert r2.output_text == chat.choices[0].message.content
    assert r2.usage.input_tokens == chat.usage.prompt_tokens
    assert "Zed" in r2.output_text, r2.output_text

    # A streamed follow-up is answered the same way and stored too.
    events = list(client.responses.create(previous_response_id=r1.id, input=ask, max_output_tokens=8,
                                          stream=True, **kw))
    r3 = events[-1].response
    assert r3.output_text == r2.output_text and r3.previous_response_id == r1.id
    assert client.responses.retrieve(r3.id).output_text == r3.output_text

    # Read back: the response, and the items it was answered from.
    got = client.responses.retrieve(r1.id)
    assert got.id == r1.id and got.output_text == r1.output_text
    items = client.responses.input_items.list(r2.id).data
    assert [i.type for i in items] == ["message", "message", "message"]
    assert [i.role for i in items] == ["user", "assistant", "user"]

    # Deleted, it is gone: retrieving it or continuing from it is a 404 that says what to do.
    client.responses.delete(r1.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r1.id)
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(previous_response_id=r1.id, input=ask, max_output_tokens=4, **kw)
    assert "send the whole conversation in `input`" in e.value.body["message"], e.value.body
    # A follow-up of a follow-up still holds the whole conversation (copied, not linked).
    r4 = client.responses.create(previous_response_id=r2.id, input="And where do I live? One word.",
                                 max_output_tokens=8, **kw)
    assert len(client.responses.input_items.list(r4.id).data) == 5

    # store: false is answered and not kept.
    r5 = client.responses.create(input="Say hi.", store=False, max_output_tokens=4, **kw)
    assert r5.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r5.id)
