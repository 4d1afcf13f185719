#!/usr/bin/env python3
"""Runs llama.cpp's own server tests against `owl serve`.

    python tests/llama_server_suite/run.py [TEST_FILE_STEM ...] [-- PYTEST_ARGS]

The test files are llama.cpp's, unchanged, fetched by scripts/fetch-server-suite
into <owl cache>/server-suite (or $OWL_SERVER_SUITE_DIR). This harness supplies
their `utils` (utils.py: a ServerProcess that starts target/release/owl serve on the
local SmolLM2 file) and their conftest (owl_suite.py, loaded as a plugin), and runs
pytest -m "not slow" in the suite's own tests folder, so the tests' relative paths
(../../../models/templates/...) resolve. expectations.toml lists the tests owl is
known to fail, each classified; they are strict xfails (see owl_suite.py).

Environment: OWL_SUITE_SERVER=llama-server (+ LLAMA_SERVER_BIN_PATH) runs the same
tests against llama-server, raw (no expectations); OWL_SUITE_REPORT=FILE writes
every outcome as JSON; OWL_BIN overrides the owl binary.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The ten files issue 21 names.
FILES = ["chat_completion", "completion", "tokenize", "security", "basic", "stream",
         "metrics", "tool_call", "compat_oai_responses", "compat_anthropic"]


def suite_dir() -> Path:
    if os.environ.get("OWL_SERVER_SUITE_DIR"):
        return Path(os.environ["OWL_SERVER_SUITE_DIR"])
    sys.path.insert(0, str(HERE))
    import utils  # noqa: E402 (the cache base lives there)
    return utils.model_cache_dir().parent / "server-suite"


def main(argv):
    files, extra = argv, []
    if "--" in argv:
        i = argv.index("--")
        files, extra = argv[:i], argv[i + 1:]
    files = files or FILES
    root = suite_dir()
    tests = root / "tools" / "server" / "tests"
    if not (root / ".complete").exists():
        sys.exit(f"{root} holds no fetched suite: run scripts/fetch-server-suite first")
    paths = []
    for stem in files:
        p = tests / "unit" / f"test_{stem}.py"
        if not p.exists():
            sys.exit(f"{p} is not in the fetched suite")
        paths.append(f"unit/test_{stem}.py")
    # The tests import `utils` and write into ./tmp (as llama.cpp's own run does).
    os.chdir(tests)
    (tests / "tmp").mkdir(exist_ok=True)
    sys.path.insert(0, str(HERE))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    import pytest
    import utils

    args = ["-p", "owl_suite", "-p", "no:cacheprovider", "--rootdir", str(tests),
            "-c", os.devnull, "-m", "not slow", "-q", "-rfEX"]
    if utils.server_kind() != "owl":
        args.append("--owl-no-expectations")
    return pytest.main(args + extra + paths)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
