"""A real `twelvefold` subprocess signalled with Ctrl-C at a chosen moment, and the
project it runs in (tests/test_cli_interrupt_early.py and test_cli_interrupt_servers.py).

The moment is counted from a readiness marker: `-X importtime` reports each module as it
is imported, and the first report of `click` comes once `twelvefold.cli` has begun
importing it (before that, the interpreter itself is starting, and Python ends on Ctrl-C
as it always does). Further points are markers of the tests' own: the store file made,
the thread's tool entered.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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

CLICK_IMPORTED = re.compile(r"^import time:.*\|\s+click(\.|$)")

EXIT_SECONDS = 120
"""How long an interrupted command may take to end before the test fails."""


@pytest.fixture
def block_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder holding block.agent (its tool waits for a `release` file) and its tools."""
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
    apart from the command's own)."""

    def __init__(self, folder: Path, args: list[str]) -> None:
        # faulthandler prints every thread's stack on SIGABRT: what a command that did
        # not end was doing (see `interrupt`).
        env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "twelvefold", *args],
            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
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

    def interrupt(self, how: int = signal.SIGINT) -> int:
        """Send SIGINT (or `how`) and wait for the exit status; a command still running
        after EXIT_SECONDS fails the test with what it said and where each thread was."""
        self.process.send_signal(how)
        try:
            self.process.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(timeout=30)
            self.reader.join()
            shown = "\n".join(self.said[-200:])
            pytest.fail(f"still running {EXIT_SECONDS} s after Ctrl-C; it said:\n{shown}")
        self.reader.join()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join()


def interrupted_at(
    folder: Path, args: list[str], when: Callable[[Running], None], how: int = signal.SIGINT
) -> tuple[int, list[str]]:
    """(exit status, stderr lines) of `twelvefold ARGS` in FOLDER, sent Ctrl-C (or the
    signal `how`) once `when(running)` returns."""
    running = Running(folder, args)
    try:
        when(running)
        return running.interrupt(how), running.said
    finally:
        (folder / "release").touch()  # a tool that went on ends (and is killed below)
        running.kill()
        (folder / "release").unlink()


def after_click(delay: float) -> Callable[[Running], None]:
    """A `when` for `interrupted_at`: DELAY seconds after `click` began to import."""

    def wait(running: Running) -> None:
        assert running.click.wait(120), "twelvefold never imported click"
        time.sleep(delay)  # where it lands varies; each outcome is checked the same way

    return wait
