"""Minimal HTTP over the standard library, for requests the SDK would not send
(malformed bodies, wrong types) and for SSE streams closed mid-way."""

import contextlib
import http.client
import json as jsonlib
from urllib.parse import urlsplit


class Response:
    def __init__(self, status, headers, body):
        self.status_code = status
        self.headers = headers
        self.content = body
        self.text = body.decode("utf-8", "replace")

    def json(self):
        return jsonlib.loads(self.text)


def _conn(url, timeout):
    u = urlsplit(url)
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout), path


def request(method, url, json=None, content=None, headers=None, timeout=120):
    conn, path = _conn(url, timeout)
    h = dict(headers or {})
    body = content
    if json is not None:
        body = jsonlib.dumps(json).encode()
    if body is not None:
        h.setdefault("content-type", "application/json")
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def get(url, **kw):
    return request("GET", url, **kw)


def post(url, **kw):
    return request("POST", url, **kw)


class Stream:
    def __init__(self, resp):
        self._resp = resp
        self.status_code = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}

    def read(self):
        return self._resp.read()

    def iter_lines(self):
        while True:
            line = self._resp.readline()
            if not line:
                return
            yield line.decode("utf-8").rstrip("\r\n")


@contextlib.contextmanager
def stream(method, url, json=None, headers=None, timeout=300):
    """A streamed response; leaving the block closes the connection at once."""
    conn, path = _conn(url, timeout)
    h = {"content-type": "application/json", **(headers or {})}
    try:
        conn.request(method, path, body=jsonlib.dumps(json).encode(), headers=h)
        yield Stream(conn.getresponse())
    finally:
        conn.close()
