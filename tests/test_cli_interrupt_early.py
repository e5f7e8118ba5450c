"""Ctrl-C at any moment of `twelvefold run`, from its first import on: exit 130, one line
on stderr, never a traceback, and the store left consistent (no thread, or one that
`resume` runs on).

Found by a red team: a SIGINT in the first half second was `Aborted!` and exit 1 (while
click loaded the command), a traceback (while `twelvefold.cli` imported click), a bare
`interrupted` with "coroutine ... was never awaited" below it, or the right line followed
by an exit by SIGINT (CPython marks a Ctrl-C raised inside `exec` of a string, where
`dataclasses` build their methods, as unhandled, whoever handles it).

A real `twelvefold run` subprocess, signalled at a range of delays counted from a
readiness marker: `-X importtime` reports each module as it is imported, and the first
report of `click` comes once `twelvefold.cli` has begun importing it (before that, the
interpreter itself is starting, and Python ends on Ctrl-C as it always does). Further
points are markers of their own: the store file made, the thread's tool entered.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.waiting import wait_for
from twelvefold.runtime.store import SqliteStore, StoreNotFound

AGENT = """\
agent block "Waits in its tool until the test lets it go." {
  input string
  start wait
}

type Page { text: string }

tool wait -> Page = "block_tools:wait" {
  next done
}

final done(Page)
"""

TOOLS = """\
import os
import time
from pathlib import Path


def wait(idempotency_key: str) -> dict[str, str]:
    folder = Path(os.environ["BLOCK_DIR"])
    (folder / "entered").write_text(idempotency_key)
    deadline = time.monotonic() + 120  # a test that never lets go fails, not hangs
    while not (folder / "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.01)
    return {"text": "ok"}
"""

RUN = ["run", "block.agent", "--input", "go"]

CLICK_IMPORTED = re.compile(r"^import time:.*\|\s+click(\.|$)")

DELAYS = [0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0]
"""Seconds after `click` began to import: the command's module loading, the agent
compiling, the store opening, the thread launching (on this machine, about 0.05 to 1 s)."""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "block.agent").write_text(AGENT)
    (folder / "block_tools.py").write_text(TOOLS)
    monkeypatch.setenv("BLOCK_DIR", str(folder))
    monkeypatch.setenv("TWELVEFOLD_DB", "")
    monkeypatch.delenv("TWELVEFOLD_STORE", raising=False)
    yield folder


class Running:
    """`twelvefold ARGS` with its stderr read as it comes (`-X importtime` lines kept
    apart from the command's own; test_cli_interrupt_servers.py uses it too)."""

    def __init__(self, folder: Path, args: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "twelvefold", *args],
            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.said: list[str] = []
        self.click = threading.Event()
        self.reader = threading.Thread(target=self._read)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if CLICK_IMPORTED.match(line):
                self.click.set()
            elif not line.startswith("import time:"):
                self.said.append(line.rstrip("\n"))
        self.click.set()

    def saying(self, start: str) -> str | None:
        return next((line for line in self.said if line.startswith(start)), None)

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=120)
        self.reader.join()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join()


def interrupted_at(
    folder: Path, args: list[str], when: Callable[[Running], None]
) -> tuple[int, list[str]]:
    running = Running(folder, args)
    try:
        when(running)
        return running.interrupt(), running.said
    finally:
        (folder / "release").touch()  # a tool that went on ends (and is killed below)
        running.kill()
        (folder / "release").unlink()


def assert_consistent(folder: Path) -> None:
    """No store, or one whose threads `resume` runs on to the end."""
    db = folder / ".twelvefold" / "threads.db"
    if not db.exists():
        return
    try:
        store = SqliteStore(db, create=False)
    except StoreNotFound:
        pytest.fail("an interrupted run left a file that is no store")
    try:
        threads = [(info.id, info.status) for info in store.threads()]
    finally:
        store.close()
    (folder / "release").touch()
    for thread_id, status in threads:
        assert status == "running", (thread_id, status)
        resumed = subprocess.run(
            [sys.executable, "-m", "twelvefold", "resume", thread_id],
            cwd=folder, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        assert f"thread {thread_id} (block) finished" in resumed.stdout, resumed.stdout


def assert_one_interrupted_line(code: int, said: list[str]) -> None:
    assert code == 130, (code, said)
    assert len(said) == 1 and said[0].startswith("interrupted: "), said


@pytest.mark.parametrize("delay", DELAYS)
def test_ctrl_c_early_in_run_is_one_line_exit_130(project: Path, delay: float) -> None:
    def after_click(running: Running) -> None:
        assert running.click.wait(120), "twelvefold never imported click"
        time.sleep(delay)  # where it lands varies; each outcome is checked the same way

    code, said = interrupted_at(project, RUN, after_click)
    assert_one_interrupted_line(code, said)
    assert_consistent(project)


@pytest.mark.parametrize("marker", ["the store file", "the tool entered"])
def test_ctrl_c_at_a_marker_is_one_line_exit_130(project: Path, marker: str) -> None:
    made = {
        "the store file": project / ".twelvefold" / "threads.db",
        "the tool entered": project / "entered",
    }[marker]

    def at_marker(running: Running) -> None:
        wait_for(made.exists, marker)

    code, said = interrupted_at(project, RUN, at_marker)
    assert_one_interrupted_line(code, said)
    if marker == "the tool entered":
        assert "nothing is lost" in said[0] and "twelvefold resume" in said[0], said
    assert_consistent(project)
