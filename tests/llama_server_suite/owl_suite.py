"""The pytest plugin that stands in for llama.cpp's tools/server/tests/conftest.py.

run.py loads it with `-p owl_suite`. It
- stops every server a test started, after the test (as llama.cpp's conftest does);
- applies expectations.toml: each listed test id (or fnmatch pattern) becomes a
  strict xfail, so the run fails when a listed test starts passing as well as when
  an unlisted one fails; a listed id that matches no collected test fails the run;
- prints, and with OWL_SUITE_REPORT=FILE writes as JSON, the outcome of every test
  and the counts per file.
"""

import fnmatch
import json
import os
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

import utils

HERE = Path(__file__).resolve().parent
CLASSES = {
    "a": "model-specific expectation",
    "b": "llama.cpp-only behaviour owl does not copy",
    "c": "missing in owl",
}
_OUTCOMES: dict = {}  # test id -> passed, failed, xfailed, xpassed or skipped
_SEEN: set = set()  # every collected test id, deselected ones included


def load_expectations(path: Path) -> dict:
    """{id or pattern: (class, reason, strict)} from the TOML file; bad entries are errors.
    `strict = false` marks an outcome that depends on scheduling (which of several
    parallel requests runs out of the shared KV cache first): it may pass or fail."""
    data = tomllib.loads(path.read_text())
    out = {}
    for key, entry in data.get("expect", {}).items():
        cls, reason = entry.get("class"), entry.get("reason", "")
        if cls not in CLASSES or not reason.strip():
            raise pytest.UsageError(f"{path}: {key!r} needs class a, b or c and a reason")
        out[key] = (cls, reason, entry.get("strict", True) is not False)
    return out


def pytest_addoption(parser):
    parser.addoption("--owl-no-expectations", action="store_true",
                     help="run without expectations.toml (raw pass/fail, e.g. for llama-server)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: marks tests as slow (deselect with '-m \"not slow\"')")
    config.addinivalue_line("markers", "serial")
    use = not config.getoption("--owl-no-expectations")
    config._owl_expect = load_expectations(HERE / "expectations.toml") if use else {}


def pytest_collection_modifyitems(session, config, items):
    _SEEN.update(item.nodeid for item in items)
    for item in items:
        for key, (cls, reason, strict) in config._owl_expect.items():
            if item.nodeid == key or fnmatch.fnmatchcase(item.nodeid, key):
                item.add_marker(pytest.mark.xfail(strict=strict, reason=f"({cls}) {reason}"))
                break


def pytest_deselected(items):
    _SEEN.update(item.nodeid for item in items)


def unmatched(expect: dict) -> list:
    """Listed ids (in files this run collected) that match no test: renamed or gone."""
    files = {n.split("::")[0] for n in _SEEN}
    return sorted(k for k in expect if k.split("::")[0] in files
                  and not any(n == k or fnmatch.fnmatchcase(n, k) for n in _SEEN))


@pytest.fixture(autouse=True)
def stop_server_after_each_test():
    yield
    for server in list(utils.server_instances):
        server.stop()


def pytest_runtest_logreport(report):
    """One outcome per test: its call's, or its setup's when setup did not pass;
    a test that passed but whose teardown failed counts as failed."""
    outcomes = _OUTCOMES
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.outcome == "skipped" else "xpassed"
        elif report.outcome == "failed" and "[XPASS(strict)]" in str(report.longrepr):
            outcome = "xpassed"
        else:
            outcome = report.outcome
        outcomes[report.nodeid] = outcome
    elif report.when == "teardown" and report.outcome == "failed" and outcomes.get(report.nodeid) == "passed":
        outcomes[report.nodeid] = "failed"


def pytest_sessionfinish(session, exitstatus):
    utils.stop_pool()
    config = session.config
    per_file = defaultdict(lambda: defaultdict(int))
    for nodeid, outcome in _OUTCOMES.items():
        per_file[nodeid.split("::")[0]][outcome] += 1
    kinds = ["passed", "failed", "xfailed", "xpassed", "skipped"]
    lines = [f"{'file':45} " + " ".join(f"{k:>8}" for k in kinds)]
    for f in sorted(per_file):
        lines.append(f"{f:45} " + " ".join(f"{per_file[f][k]:8d}" for k in kinds))
    tot = {k: sum(per_file[f][k] for f in per_file) for k in kinds}
    lines.append(f"{'total':45} " + " ".join(f"{tot[k]:8d}" for k in kinds))
    print(f"\n== llama.cpp server suite against {utils.server_kind()}\n" + "\n".join(lines))
    gone = unmatched(config._owl_expect)
    if gone:
        print("\nexpectations.toml lists tests this run did not collect (renamed or removed?):")
        for k in gone:
            print("  " + k)
        session.exitstatus = 1
    if os.environ.get("OWL_SUITE_REPORT"):
        with open(os.environ["OWL_SUITE_REPORT"], "w") as f:
            json.dump({"server": utils.server_kind(), "outcomes": _OUTCOMES,
                       "per_file": per_file, "unmatched": gone}, f, indent=1)
