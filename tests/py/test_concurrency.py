"""Continuous batching seen from clients: concurrent temperature-0 streams give
their solo outputs, --parallel caps active sequences, and a client that goes
away mid-stream frees its sequence."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import rawhttp

from conftest import MODEL, PARALLEL, stream_text

N_CLIENTS = 16
TOPICS = ["owls", "rivers", "bread", "chess", "mountains", "the moon", "bicycles", "tea",
          "volcanoes", "libraries", "bees", "winter", "trains", "music", "gardens", "clocks"]


def stream_chat(url, topic, max_tokens=16):
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"Write one sentence about {topic}."}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True}
    return stream_text(url, body)[0]


def test_concurrent_streams_equal_solo(server):
    topics = TOPICS[:N_CLIENTS]
    solo = [stream_chat(server.url, t) for t in topics]
    assert all(solo), solo

    peak = {"active": 0, "queued": 0}
    done = threading.Event()

    def watch():
        while not done.is_set():
            m = server.metrics()
            peak["active"] = max(peak["active"], m["owl_active_sequences"])
            peak["queued"] = max(peak["queued"], m["owl_queue_depth"])
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(N_CLIENTS) as pool:
            together = list(pool.map(lambda t: stream_chat(server.url, t), topics))
    finally:
        done.set()
        watcher.join()
    for t, a, b in zip(topics, solo, together):
        assert a == b, f"{t}: solo {a!r} != concurrent {b!r}"
    assert 1 <= peak["active"] <= PARALLEL, peak
    assert peak["queued"] >= 1, peak


def test_disconnect_frees_sequence(server):
    before = server.metrics()
    body = {"model": MODEL, "prompt": "1, 2, 3, 4, 5, 6, 7,", "max_tokens": 1000, "temperature": 0, "stream": True}
    with rawhttp.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        got = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                got += 1
                if got == 3:
                    break
        assert server.metrics()["owl_active_sequences"] >= 1
    # The connection is closed: the engine cancels the request within a step.
    deadline = time.time() + 15
    while time.time() < deadline:
        m = server.metrics()
        if m["owl_active_sequences"] == 0 and m["owl_requests_cancelled_total"] > before["owl_requests_cancelled_total"]:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"sequence not freed: {m}")
    assert m["owl_generated_tokens_total"] - before["owl_generated_tokens_total"] < 500
    # The next request is served.
    r = rawhttp.post(server.url + "/v1/completions",
                   json={"model": MODEL, "prompt": "Hello", "max_tokens": 4, "temperature": 0}, timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1


def test_ctx_is_a_shared_budget():
    """--ctx 512 with --parallel 4 is one budget, not four slots of 128: a
    ~200-token prompt fits, and two such requests at once both finish with the
    solo output."""
    from conftest import Server

    s = Server("--ctx", "512", "--parallel", "4")
    try:
        prompt = "Summarize: " + " ".join(f"item {i}," for i in range(40))
        n = len(rawhttp.post(s.url + "/tokenize", json={"content": prompt, "add_special": True}).json()["tokens"])
        assert 128 < n and 2 * (n + 8) < 512, n
        body = {"model": MODEL, "prompt": prompt, "max_tokens": 8, "temperature": 0}
        solo = rawhttp.post(s.url + "/v1/completions", json=body, timeout=300).json()
        assert solo["usage"]["prompt_tokens"] == n
        with ThreadPoolExecutor(2) as pool:
            rs = list(pool.map(lambda _: rawhttp.post(s.url + "/v1/completions", json=body, timeout=300), range(2)))
        for r in rs:
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["text"] == solo["choices"][0]["text"]
            assert r.json()["usage"]["completion_tokens"] == solo["usage"]["completion_tokens"]
    finally:
        s.stop()


def test_queue_full_is_503_with_retry_after():
    """--parallel 1 --queue 1: of six simultaneous requests, the ones beyond the
    running and the queued one are refused at once with 503 and Retry-After."""
    from conftest import Server

    s = Server("--ctx", "1024", "--parallel", "1", "--queue", "1")
    try:
        body = {"model": MODEL, "prompt": "1, 2, 3,", "max_tokens": 24, "temperature": 0}
        with ThreadPoolExecutor(6) as pool:
            rs = list(pool.map(lambda _: rawhttp.post(s.url + "/v1/completions", json=body, timeout=300), range(6)))
        ok = [r for r in rs if r.status_code == 200]
        busy = [r for r in rs if r.status_code == 503]
        assert len(ok) + len(busy) == 6, [r.text for r in rs]
        assert ok and busy, [r.status_code for r in rs]
        for r in busy:
            assert r.headers.get("retry-after") == "1"
            assert r.json()["error"]["code"] == "queue_full"
        assert len({r.json()["choices"][0]["text"] for r in ok}) == 1
        assert rawhttp.post(s.url + "/v1/completions", json=body).status_code == 200
    finally:
        s.stop()
