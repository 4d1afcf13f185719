"""A ledger write the disk refuses part-way, through a real `owl serve`: its soft file
size limit (RLIMIT_FSIZE, as a full disk or a quota would refuse) is lowered while it
runs, so the next record is cut short by the kernel. The answers still go out; the
ledger file is cut back to its last good line (valid JSON Lines at every moment); one
error line says what happened; and once the limit is lifted the held records are
written before the next one, so no answer goes unrecorded."""

import resource
import time

from conftest import Server, fresh_home, ledger_path, ledger_records
from test_cost import chat

# Past a file size limit a write fails with EFBIG only where SIGXFSZ is ignored
# (else the signal kills the process); an ignored signal stays ignored across exec.
IGNORE_XFSZ = ("sh", "-c", "trap '' XFSZ; exec \"$0\" \"$@\"")


def log_lines(s, text):
    """The server's stderr lines holding `text`, once at least one has been read (its
    stderr is read by a thread, so a line printed before an answer may trail it)."""
    deadline = time.time() + 30
    while time.time() < deadline and not any(text in line for line in s.log):
        time.sleep(0.05)
    return [line for line in s.log if text in line]


def test_a_refused_ledger_write_is_cut_back_reported_and_retried(tmp_path_factory):
    home = fresh_home(tmp_path_factory, "ledger-fault-home")
    s = Server("--parallel", "1", env={"OWL_HOME": str(home)}, wrap=IGNORE_XFSZ)
    try:
        answers = [chat(s.url, i).json()["usage"] for i in range(2)]
        path = ledger_path(home)
        good = path.stat().st_size
        assert len(ledger_records(home)) == 2

        # Room for part of one more line: the kernel writes that much, then refuses.
        _, hard = resource.prlimit(s.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(s.proc.pid, resource.RLIMIT_FSIZE, (good + 40, hard))
        for i in (2, 3):
            answers.append(chat(s.url, i).json()["usage"])  # still answered
            assert path.stat().st_size == good, "the torn line was cut back"
            assert len(ledger_records(home)) == 2  # and every line parses
        errors = log_lines(s, "cannot write the ledger")
        assert len(errors) == 1, s.log  # one line for the failure, not one per request
        assert "retried with the next write" in errors[0], errors

        resource.prlimit(s.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
        answers.append(chat(s.url, 4).json()["usage"])
        assert log_lines(s, "2 held records written"), s.log
    finally:
        s.stop()
    assert s.proc.returncode == 0, s.log
    recs = ledger_records(home)
    got = [(r["prompt_tokens"], r["completion_tokens"], r["cost_usd"]) for r in recs]
    want = [(u["prompt_tokens"], u["completion_tokens"], u["owl"]["cost_usd"]) for u in answers]
    assert got == want, "every answer has its record, in order"
