"""Ctrl-C during a tool call says what `resume` will do with it (a real process and a real
SIGINT): a tool that takes an idempotency key is run on with it ("nothing is lost"); a
keyless one may have run, so resume fails the step (`Interrupted`) instead of running it
again, and the line says so and names `--retry`."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.waiting import wait_for

AGENT = """\
agent slow "Calls one slow tool." {
  input string
  start call
}

type Done { text: string }

tool call -> Done = "slow_tools:FUNCTION" {
  next done
}

final done(Done)
"""

TOOLS = """\
import os
import time
from pathlib import Path


def _once() -> dict[str, str]:
    marker = Path(os.environ["SLOW_DIR"]) / "started"
    if not marker.exists():
        marker.write_text("x")
        time.sleep(600)  # interrupted here
    return {"text": "ok"}


def keyless() -> dict[str, str]:
    return _once()


def keyed(idempotency_key: str) -> dict[str, str]:
    return _once()
"""


def twelvefold(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twelvefold", *args],
        cwd=folder, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def interrupted_run(folder: Path) -> tuple[str, str]:
    """`run` Ctrl-C'd while its tool sleeps: (stderr, thread id)."""
    running = subprocess.Popen(
        [sys.executable, "-m", "twelvefold", "run", "slow.agent", "--input", "go", "--db", "t.db"],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: (folder / "started").exists(), "the tool to start")
        running.send_signal(signal.SIGINT)
        _, err = running.communicate(timeout=120)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert running.returncode == 130, err
    (line,) = err.splitlines()
    thread_id = line.split("thread ", 1)[1].split(" ", 1)[0]
    return line, thread_id


@pytest.mark.parametrize("function", ["keyless", "keyed"])
def test_ctrl_c_in_a_tool_says_what_resume_will_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, function: str
) -> None:
    (tmp_path / "slow.agent").write_text(AGENT.replace("FUNCTION", function))
    (tmp_path / "slow_tools.py").write_text(TOOLS)
    monkeypatch.setenv("SLOW_DIR", str(tmp_path))
    monkeypatch.delenv("TWELVEFOLD_STORE", raising=False)
    monkeypatch.setenv("TWELVEFOLD_DB", "")

    line, thread_id = interrupted_run(tmp_path)
    # The commands the line gives run as printed: with the run's `--db` (the default store
    # holds no such thread).
    given = re.findall(r"`(twelvefold [^`]*)`", line)
    assert given[0] == f"twelvefold resume {thread_id} --db t.db", line
    resumed = twelvefold(tmp_path, *shlex.split(given[0])[1:])

    if function == "keyed":
        assert "nothing is lost" in line and line.endswith("runs it on"), line
        assert resumed.returncode == 0, resumed.stderr
    else:
        assert "nothing is lost" not in line, line
        assert "takes no idempotency key" in line and "(Interrupted)" in line, line
        assert f"`twelvefold resume {thread_id} --retry --db t.db` then runs it again" in line
        assert resumed.returncode == 1 and "Interrupted" in resumed.stdout + resumed.stderr
        retried = twelvefold(tmp_path, *shlex.split(given[1])[1:])
        assert retried.returncode == 0, retried.stdout + retried.stderr
