"""owl's stand-in for llama.cpp's tools/server/tests/utils.py.

llama.cpp's server tests (fetched unchanged by scripts/fetch-server-suite) do
`from utils import *` and drive a `ServerProcess`: they set attributes named after
llama-server's flags (n_ctx, n_slots, api_key, ...), call start(), then send
requests through make_request / make_stream_request / make_any_request. This file
gives them the same names, but every preset starts `target/release/owl serve` on the
local smollm2-135m-instruct file (no downloads), with each attribute mapped to owl's
flag or, where owl has none, left out (owl_args() says which).

OWL_SUITE_SERVER=llama-server (with LLAMA_SERVER_BIN_PATH, default
/work/peer/bin/llama-server) runs the same tests against llama-server on the same
model file, with llama.cpp's own flags, for comparison.
"""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from json import JSONDecodeError
from pathlib import Path
from re import RegexFlag
from typing import Any, Callable, Iterator, List, Literal, Optional, Set, Tuple  # noqa: F401 (re-exported)

import requests

ROOT = Path(__file__).resolve().parents[2]
OWL = os.environ.get("OWL_BIN", str(ROOT / "target" / "release" / "owl"))
# The model every preset runs: its models.lock name (owl) and file (llama-server).
MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "nomic-embed-text-v1.5"
TMP_DIR = os.path.join(os.getcwd(), "tmp")

DEFAULT_HTTP_TIMEOUT = 60
DEFAULT_REQUEST_TIMEOUT = 600


def server_kind() -> str:
    kind = os.environ.get("OWL_SUITE_SERVER", "owl")
    if kind not in ("owl", "llama-server"):
        raise RuntimeError(f"OWL_SUITE_SERVER must be owl or llama-server, not {kind!r}")
    return kind


def model_cache_dir() -> Path:
    """The same base as engine/src/registry.rs cache_dir(), + /models."""
    if os.environ.get("OWL_HOME"):
        base = Path(os.environ["OWL_HOME"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches" / "owl"
    elif os.environ.get("XDG_CACHE_HOME", "").startswith("/"):
        base = Path(os.environ["XDG_CACHE_HOME"]) / "owl"
    else:
        base = Path.home() / ".cache" / "owl"
    return base / "models"


def model_file(name: str) -> str:
    """The cached file of a models.lock entry (for llama-server, which takes a path)."""
    text = (ROOT / "models.lock").read_text()
    m = re.search(r'name = "' + re.escape(name) + r'"\s*\nfile = "([^"]+)"', text)
    if not m:
        raise RuntimeError(f"{name} is not in models.lock")
    path = model_cache_dir() / m.group(1)
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `owl pull {name}` first")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerResponse:
    headers: dict
    status_code: int
    body: dict | Any


class ServerError(Exception):
    def __init__(self, code, body):
        self.code = code
        self.body = body


class ServerProcess:
    """One server the tests configure through attributes, then start()."""

    # What the tests read or set. The tiny llama.cpp defaults are kept so the
    # tests' own arithmetic (n_ctx / n_slots, ...) holds.
    debug: bool = False
    server_host: str = "127.0.0.1"
    temperature: float = 0.8
    seed: int = 42
    offline: bool = False
    model_alias: str | None = None
    model_tags: str | None = None
    model_hf_repo: str | None = None
    model_hf_file: str | None = None
    model_url: str | None = None
    model_file: str | None = None
    model_draft: str | None = None
    n_threads: int | None = None
    n_gpu_layer: int | None = None
    n_batch: int | None = None
    n_ubatch: int | None = None
    n_ctx: int | None = None
    n_predict: int | None = None
    n_slots: int | None = None
    kv_unified: bool | None = False
    fa: str | None = None
    server_continuous_batching: bool | None = False
    server_embeddings: bool | None = False
    server_reranking: bool | None = False
    server_metrics: bool | None = False
    server_slots: bool | None = False
    api_key: str | None = None
    enable_ctx_shift: int | None = False
    no_ui: bool | None = None
    jinja: bool | None = None
    reasoning_format: str | None = None
    reasoning: str | None = None
    chat_template: str | None = None
    chat_template_file: str | None = None
    server_path: str | None = None
    media_path: str | None = None
    cache_prompt: bool | None = None
    backend_sampling: bool = False
    ui_mcp_proxy: bool = False
    server_tools: str | None = None
    cors_origins: str | None = None
    log_path: str | None = None

    process: subprocess.Popen | None = None

    def __init__(self):
        self.server_port = int(os.environ["PORT"]) if "PORT" in os.environ else free_port()
        self.external_server = False
        self.ready = False

    # --- command lines ------------------------------------------------------
    def owl_args(self) -> List[str]:
        """`owl serve` flags for this configuration. Attributes owl has no flag
        for are left out: temperature (owl takes it per request),
        n_batch/n_ubatch/fa/kv_unified/cont-batching (owl's scheduler has no such
        knobs), jinja (owl always renders the GGUF's Jinja template), debug, slots,
        metrics (always on), no_ui, tags, hf_repo/hf_file (every preset runs the
        local SmolLM2 file)."""
        args = [OWL, "serve", "--model", MODEL, "--no-ledger", "--drain-seconds", "0",
                "--host", self.server_host, "--port", str(self.server_port)]
        if self.n_ctx:
            args += ["--ctx", str(self.n_ctx)]
        if self.n_slots:
            args += ["--parallel", str(self.n_slots)]
        if self.n_threads:
            args += ["--threads", str(self.n_threads)]
        if self.n_predict and self.n_predict > 0:
            args += ["--max-tokens", str(self.n_predict)]
        if self.seed is not None and self.seed >= 0:
            args += ["--seed", str(self.seed)]
        if self.api_key:
            args += ["--api-key", self.api_key]
        if self.cors_origins:
            args += ["--cors", self.cors_origins]
        for alias in (self.model_alias or "").split(","):
            if alias.strip():
                args += ["--alias", alias.strip()]
        if self.chat_template_file:
            args += ["--chat-template", self.chat_template_file]
        if self.server_embeddings:
            args += ["--embedding-model", EMBED_MODEL]
        return args

    def llama_args(self) -> List[str]:
        """llama-server's own flags, as llama.cpp's utils.py builds them, on the
        same local model file."""
        path = self.server_path or os.environ.get("LLAMA_SERVER_BIN_PATH", "/work/peer/bin/llama-server")
        a: List[Any] = [path, "--port", self.server_port, "--temp", self.temperature,
                        "--seed", self.seed, "--host", self.server_host,
                        "--model", model_file(MODEL), "--offline"]
        opt = [("--ctx-size", self.n_ctx), ("--parallel", self.n_slots), ("--batch-size", self.n_batch),
               ("--ubatch-size", self.n_ubatch), ("--threads", self.n_threads),
               ("--n-predict", self.n_predict), ("--alias", self.model_alias), ("--tags", self.model_tags),
               ("--api-key", self.api_key), ("--cors-origins", self.cors_origins), ("-fa", self.fa),
               ("--reasoning-format", self.reasoning_format), ("--reasoning", self.reasoning),
               ("--chat-template", self.chat_template), ("--chat-template-file", self.chat_template_file),
               ("--media-path", self.media_path), ("--tools", self.server_tools)]
        for flag, value in opt:
            if value is not None and value != "":
                a += [flag, value]
        flags = [("--cont-batching", self.server_continuous_batching), ("--embedding", self.server_embeddings),
                 ("--reranking", self.server_reranking), ("--metrics", self.server_metrics),
                 ("--kv-unified", self.kv_unified), ("--context-shift", self.enable_ctx_shift),
                 ("--no-ui", self.no_ui), ("--verbose", self.debug), ("--ui-mcp-proxy", self.ui_mcp_proxy),
                 ("--backend_sampling", self.backend_sampling)]
        a += [flag for flag, on in flags if on]
        a.append("--slots" if self.server_slots else "--no-slots")
        a.append("--jinja" if self.jinja else "--no-jinja")
        return [str(x) for x in a]

    # --- life cycle ---------------------------------------------------------
    def start(self, timeout_seconds: int = DEFAULT_HTTP_TIMEOUT) -> None:
        if server_kind() == "owl":
            if not Path(OWL).exists():
                raise RuntimeError(f"{OWL} is missing: run `cargo build --release` first")
            args = self.owl_args()
        else:
            args = self.llama_args()
        key = self._pool_key(args)
        if key is not None and key in _POOL:
            # A server started with the same flags by an earlier test: reuse it.
            self.process, self.server_port = _POOL.pop(key)
            if self.process.poll() is None:
                print(f"tests: reusing the server on port {self.server_port}: {' '.join(args)}")
                server_instances.add(self)
                self._key = key
                self.ready = True
                return
            self.server_port = free_port()
            args = self.owl_args() if server_kind() == "owl" else self.llama_args()
        self._key = key
        print(f"tests: starting server with: {' '.join(args)}")
        self._log = open(self.log_path, "w") if self.log_path else None
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                        stdout=self._log or sys.stdout, stderr=subprocess.STDOUT)
        server_instances.add(self)
        deadline = time.time() + timeout_seconds
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
        while time.time() < deadline:
            try:
                if requests.get(self.make_url("/health"), headers=headers, timeout=5).status_code == 200:
                    self.ready = True
                    return
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with status {self.process.returncode}")
            time.sleep(0.02)
        raise TimeoutError(f"server did not start within {timeout_seconds} s")

    def _pool_key(self, args: List[str]) -> tuple | None:
        """The flags without the port; None when this server must not be shared
        (OWL_SUITE_FRESH=1, or a log file a test reads)."""
        if os.environ.get("OWL_SUITE_FRESH") == "1" or self.log_path:
            return None
        i = args.index("--port")
        return tuple(args[:i] + args[i + 2:])

    def stop(self) -> None:
        server_instances.discard(self)
        key = getattr(self, "_key", None)
        if self.process and key is not None and self.process.poll() is None:
            # Kept for the next test with the same flags (llama.cpp's suite restarts
            # the server per test; owl's state between requests is only its prefix
            # cache and counters). The oldest kept server beyond POOL_SIZE goes.
            _POOL[key] = (self.process, self.server_port)
            self.process = None
            while len(_POOL) > POOL_SIZE:
                proc, _ = _POOL.pop(next(iter(_POOL)))
                _terminate(proc)
            return
        if self.process:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    # --- requests -----------------------------------------------------------
    def make_url(self, path: str, host: str | None = None) -> str:
        if host is None:
            host = self.server_host.split(",")[0].strip()
        return f"http://{host}:{self.server_port}{path}"

    def make_request(self, method: str, path: str, data: dict | Any | None = None,
                     headers: dict | None = None, timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
                     host: str | None = None) -> ServerResponse:
        url = self.make_url(path, host)
        if method == "GET":
            r = requests.get(url, headers=headers, timeout=timeout)
        elif method == "POST":
            r = requests.post(url, headers=headers, json=data, timeout=timeout)
        elif method == "DELETE":
            r = requests.delete(url, headers=headers, timeout=timeout)
        elif method == "OPTIONS":
            r = requests.options(url, headers=headers, timeout=timeout)
        else:
            raise ValueError(f"unsupported method {method}")
        res = ServerResponse()
        res.headers = dict(r.headers)
        res.status_code = r.status_code
        res.body = None
        if method != "OPTIONS":
            try:
                res.body = r.json()
            except (JSONDecodeError, requests.exceptions.JSONDecodeError):
                res.body = r.text
        print("response", res.status_code, json.dumps(res.body)[:2000])
        return res

    def make_stream_request(self, method: str, path: str, data: dict | None = None,
                            headers: dict | None = None, host: str | None = None) -> Iterator[dict]:
        if method != "POST":
            raise ValueError(f"unsupported streaming method {method}")
        r = requests.post(self.make_url(path, host), headers=headers, json=data, stream=True,
                          timeout=DEFAULT_REQUEST_TIMEOUT)
        if r.status_code != 200:
            try:
                body = r.json()
            except (JSONDecodeError, requests.exceptions.JSONDecodeError):
                body = r.text
            raise ServerError(r.status_code, body)
        for raw in r.iter_lines():
            line = raw.decode("utf-8")
            if "[DONE]" in line:
                break
            if line.startswith("data: "):
                chunk = json.loads(line[6:])
                if threading.current_thread() is threading.main_thread():
                    # (a test's own reader thread may outlive the test's output capture)
                    print("chunk", json.dumps(chunk)[:1000])
                yield chunk

    def make_any_request(self, method: str, path: str, data: dict | None = None,
                         headers: dict | None = None,
                         timeout: float | None = DEFAULT_REQUEST_TIMEOUT) -> dict:
        """A chat completion, streamed or not, as one non-streamed answer's shape.
        Streamed, it checks what llama.cpp's helper checks: one choice per chunk,
        no empty deltas, a tool call's first delta carries id/type/name, and the
        chunk without choices carries usage and timings."""
        if not data.get("stream", False):
            res = self.make_request(method, path, data, headers, timeout=timeout)
            assert res.status_code == 200, f"Server returned error: {res.status_code}"
            return res.body
        content: List[str] = []
        reasoning: List[str] = []
        calls: List[dict] = []
        finish_reason = None
        for chunk in self.make_stream_request(method, path, data, headers):
            if not chunk["choices"]:
                assert "usage" in chunk, f"Expected usage in chunk: {chunk}"
                assert "timings" in chunk, f"Expected timings in chunk: {chunk}"
                continue
            assert len(chunk["choices"]) == 1, f"Expected 1 choice, got {len(chunk['choices'])}"
            choice = chunk["choices"][0]
            delta = choice["delta"]
            if delta.get("content") is not None:
                assert len(delta["content"]) > 0, "Expected non empty content delta!"
                content.append(delta["content"])
            if delta.get("reasoning_content") is not None:
                assert len(delta["reasoning_content"]) > 0, "Expected non empty reasoning_content delta!"
                reasoning.append(delta["reasoning_content"])
            if delta.get("finish_reason") is not None:
                finish_reason = delta["finish_reason"]
            for tc in delta.get("tool_calls", []):
                if "function" not in tc:
                    raise ValueError(f"Expected function type, got {tc.get('type')}")
                if tc["index"] >= len(calls):
                    assert "id" in tc
                    assert tc.get("type") == "function"
                    assert len(tc["function"].get("name") or "") > 0, f"Expected a name, got {tc['function']}"
                    calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
                call = calls[tc["index"]]
                if tc.get("id") is not None:
                    call["id"] = tc["id"]
                fn = tc["function"]
                assert "id" not in fn, f"Function call should not have id: {fn}"
                if fn.get("name") is not None:
                    call["function"]["name"] += fn["name"]
                if fn.get("arguments") is not None:
                    call["function"]["arguments"] += fn["arguments"]
        message = {"role": "assistant",
                   "content": "".join(content) if content else None,
                   "reasoning_content": "".join(reasoning) if reasoning else None,
                   "tool_calls": calls or None}
        return {"choices": [{"index": 0, "finish_reason": finish_reason, "message": message}]}


server_instances: Set[ServerProcess] = set()
# Idle servers by flags (see ServerProcess.stop), oldest first.
_POOL: dict = {}
POOL_SIZE = 3


def _terminate(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def stop_pool() -> None:
    """Stops the idle servers (at the end of the session)."""
    while _POOL:
        proc, _ = _POOL.pop(next(iter(_POOL)))
        _terminate(proc)


def _preset(alias: str | None, n_ctx: int, n_slots: int, n_batch: int, n_predict: int | None = None,
            temperature: float = 0.8, embeddings: bool = False) -> ServerProcess:
    s = ServerProcess()
    s.model_alias = alias
    s.n_ctx = n_ctx
    s.n_slots = n_slots
    s.n_batch = n_batch
    s.n_predict = n_predict
    s.temperature = temperature
    s.seed = 42
    s.server_embeddings = embeddings
    return s


class ServerPreset:
    """llama.cpp's presets, by name, with their sizes; each runs SmolLM2."""

    @staticmethod
    def load_all() -> None:
        pass  # nothing to download

    @staticmethod
    def tinyllama2() -> ServerProcess:
        return _preset("tinyllama-2", 512, 2, 32, 64)

    @staticmethod
    def bert_bge_small() -> ServerProcess:
        return _preset("bert-bge-small", 512, 2, 128, embeddings=True)

    @staticmethod
    def bert_bge_small_with_fa() -> ServerProcess:
        s = _preset("bert-bge-small", 1024, 2, 300, embeddings=True)
        s.fa = "on"
        return s

    @staticmethod
    def tinyllama_infill() -> ServerProcess:
        return _preset("tinyllama-infill", 2048, 1, 1024, 64, temperature=0.0)

    @staticmethod
    def stories15m_moe() -> ServerProcess:
        return _preset("stories15m-moe", 2048, 1, 1024, 64, temperature=0.0)

    @staticmethod
    def jina_reranker_tiny() -> ServerProcess:
        s = _preset("jina-reranker", 512, 1, 512)
        s.server_reranking = True
        return s

    @staticmethod
    def tinygemma3() -> ServerProcess:
        return _preset("tinygemma3", 1024, 2, 512, 4)

    @staticmethod
    def router() -> ServerProcess:
        # llama-server's router has no model of its own; owl always serves one.
        return _preset(None, 1024, 1, 16, 16)


def parallel_function_calls(function_list: List[Tuple[Callable[..., Any], Tuple[Any, ...]]]) -> List[Any]:
    """Runs the calls at once; results in call order, None where one raised
    (the exception is printed), as llama.cpp's helper does."""
    results: List[Any] = [None] * len(function_list)

    def work(i, fn, args):
        try:
            results[i] = fn(*args)
        except Exception as e:  # noqa: BLE001 (the suite's contract: None on failure)
            print(f"call {i} raised: {e!r}")

    with ThreadPoolExecutor() as pool:
        for f in as_completed([pool.submit(work, i, fn, args) for i, (fn, args) in enumerate(function_list)]):
            f.result()
    return results


def match_regex(regex: str, text: str) -> bool:
    flags = RegexFlag.IGNORECASE | RegexFlag.MULTILINE | RegexFlag.DOTALL
    return re.compile(regex, flags=flags).search(text) is not None


def download_file(url: str, output_file_path: str | None = None) -> str:
    raise RuntimeError(f"the owl harness downloads nothing (asked for {url})")


def is_slow_test_allowed() -> bool:
    return os.environ.get("SLOW_TESTS") in ("1", "ON")
