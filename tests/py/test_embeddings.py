"""/v1/embeddings on the nomic-bert encoder, through the official openai SDK."""

import base64
import json
import math
import struct

import pytest

import rawhttp
from conftest import EMBED_MODEL, ROOT, Server

REFERENCE = ROOT / "engine/tests/fixtures/reference/nomic-embed-text-v1.5.f16.embeddings.jsonl"


def cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def embed(client, inputs, **kw):
    return client.embeddings.create(model=EMBED_MODEL, input=inputs, **kw)


def test_vectors_have_the_model_width_and_unit_length(client):
    r = embed(client, ["The capital of France is Paris.", "Rust is fast."])
    assert [d.index for d in r.data] == [0, 1]
    for d in r.data:
        assert len(d.embedding) == 768
        assert abs(math.sqrt(sum(x * x for x in d.embedding)) - 1) < 1e-4
    assert r.model == EMBED_MODEL
    assert r.usage.prompt_tokens == r.usage.total_tokens > 4


def test_same_vectors_as_llama_cpp(client):
    refs = [json.loads(l) for l in REFERENCE.read_text().splitlines()]
    r = embed(client, [d["text"] for d in refs])
    for d, got in zip(refs, r.data):
        assert cos(got.embedding, d["embedding"]) > 0.999, d["text"]
    # Token ids as input give the vector of the text they spell.
    t = embed(client, [refs[0]["tokens"]])
    assert cos(t.data[0].embedding, r.data[0].embedding) > 0.99999


@pytest.mark.parametrize(
    "anchor,paraphrase,unrelated",
    [
        ("How do I bake bread at home?", "What is a simple recipe for homemade bread?", "The stock market fell sharply today."),
        ("The cat sat on the mat.", "A cat was sitting on the rug.", "Quantum computers use qubits."),
        ("Where is the nearest train station?", "How can I get to the closest railway station?", "I love eating chocolate ice cream."),
        ("The weather is sunny and warm.", "It is a bright, hot day outside.", "Python is a programming language."),
    ],
)
def test_a_paraphrase_ranks_above_an_unrelated_sentence(client, anchor, paraphrase, unrelated):
    a, p, u = (d.embedding for d in embed(client, [anchor, paraphrase, unrelated]).data)
    assert cos(a, p) > cos(a, u) + 0.05, (cos(a, p), cos(a, u))


def test_base64_is_the_float_vector(server, client):
    f = embed(client, "hello world").data[0].embedding
    raw = rawhttp.post(server.url + "/embeddings",
                       json={"model": EMBED_MODEL, "input": "hello world", "encoding_format": "base64"}, timeout=60)
    assert raw.status_code == 200, raw.text
    b = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(b) // 4}f", b)) == pytest.approx(f, abs=1e-6)


@pytest.mark.parametrize("body", [{"input": []}, {"input": 3}, {"input": ["a", 1]}, {"input": "x", "encoding_format": "int8"}, {}])
def test_bad_inputs_are_400(server, body):
    r = rawhttp.post(server.url + "/v1/embeddings", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"]


def test_a_server_without_an_embedding_model_says_how_to_get_one():
    s = Server("--ctx", "512", "--parallel", "1")
    try:
        r = rawhttp.post(s.url + "/v1/embeddings", json={"input": "hi"}, timeout=30)
        assert r.status_code == 400
        assert "--embedding-model" in r.json()["error"]["message"]
    finally:
        s.stop()
