"""Clients that stop reading a long stream and never close, on a real model: the
socket write deadline (--write-timeout) drops the connection, which frees the
sequence, its KV pages and the events buffered for it; with no deadline, the
bounded event channel cancels the request once its reader is far behind, so
the engine never holds an unbounded backlog. Both watched through /metrics;
the server's RSS does not grow over repeated stalled clients."""

import json
import socket
from pathlib import Path

import pytest
from conftest import Server
from test_soak import wait_for

# A long stream with big chunks (20 logprobs each, about 1.3 KB), so the socket buffers
# (owl fixes the kernel's send buffer of each connection, conn.rs) fill early.
LONG = {"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 1900,
        "ignore_eos": True, "stream": True, "logprobs": True, "top_logprobs": 20, "temperature": 0}


def stalled_stream(url, body):
    """Sends a streaming request, then neither reads nor closes."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, int(port)))
    raw = json.dumps(body).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
              + f"content-length: {len(raw)}\r\n\r\n".encode() + raw)
    return s


def read_to_end(s):
    """What the client can still read once the server has gone: the stream must not look complete."""
    s.settimeout(30)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return data


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_client_that_never_reads_is_dropped_by_the_write_deadline():
    s = Server("--ctx", "2048", "--parallel", "2", "--write-timeout", "2", "--no-ledger")
    try:
        rss = []
        for _ in range(2):
            before = s.metrics()
            stalled = stalled_stream(s.url, LONG)
            try:
                wait_for(s, lambda m: m["owl_active_sequences"] >= 1, "the stalled stream started")
                # The socket stays open and unread: only the write deadline can end this.
                m = wait_for(s, lambda m: m["owl_http_write_timeouts_total"] > before["owl_http_write_timeouts_total"]
                             and m["owl_active_sequences"] == 0
                             and m["owl_http_connections_open"] == 1,  # the scrape itself
                             "the write deadline dropped the connection and freed the sequence")
                assert m["owl_kv_pages_used"] == m["owl_kv_pages_prefix_cache"], m
                assert m["owl_http_write_timeouts_total"] == before["owl_http_write_timeouts_total"] + 1, m
                data = read_to_end(stalled)
                assert data.startswith(b"HTTP/1.1 200"), data[:200]
                assert b"[DONE]" not in data, "a dropped stream must not look complete"
            finally:
                stalled.close()
            rss.append(rss_kib(s.proc.pid))
        # Each dropped client's buffers were freed: no growth from the first round to the second.
        assert rss[-1] <= rss[0] * 1.05, f"RSS grew over stalled clients: {rss} KiB"
    finally:
        s.stop()


def test_without_a_write_deadline_a_far_behind_reader_is_cancelled_not_buffered():
    s = Server("--ctx", "2048", "--parallel", "2", "--write-timeout", "0", "--no-ledger")
    try:
        before = s.metrics()
        stalled = stalled_stream(s.url, LONG)
        try:
            # The engine side ends once 1024 events wait unread (EVENT_BACKLOG), long before
            # max_tokens; the connection itself stays, as nothing drops it.
            m = wait_for(s, lambda m: m["owl_requests_cancelled_total"] > before["owl_requests_cancelled_total"]
                         and m["owl_active_sequences"] == 0, "the far-behind request was cancelled", seconds=300)
            assert m["owl_http_connections_open"] == 2, m  # the stalled client and the scrape
            assert m["owl_http_write_timeouts_total"] == 0, m
            assert m["owl_kv_pages_used"] == m["owl_kv_pages_prefix_cache"], m
            assert m["owl_generated_tokens_total"] - before.get("owl_generated_tokens_total", 0) < 1900, m
        finally:
            stalled.close()
        wait_for(s, lambda m: m["owl_http_connections_open"] == 1, "the closed connection was freed")
    finally:
        s.stop()
