"""Ctrl-C at any moment of `twelvefold run`, from its first import on: exit 130, one line
on stderr, never a traceback, and the store left consistent (no thread, or one that
`resume` runs on).

Found by a red team: a SIGINT in the first half second was `Aborted!` and exit 1 (while
click loaded the command), a traceback (while `twelvefold.cli` imported click), a bare
`interrupted` with "coroutine ... was never awaited" below it, or the right line followed
by an exit by SIGINT (CPython marks a Ctrl-C raised inside `exec` of a string, where
`dataclasses` build their methods, as unhandled, whoever handles it).

A real `twelvefold run` subprocess (tests/support/interrupts.py), signalled at a range of
delays counted from `click`'s import, and at markers: the store file made, the thread's
tool entered.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.interrupts import Running, after_click, interrupted_at
from tests.support.waiting import wait_for
from twelvefold.runtime.store import SqliteStore, StoreNotFound

RUN = ["run", "block.agent", "--input", "go"]

DELAYS = [0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0]
"""Seconds after `click` began to import: the command's module loading, the agent
compiling, the store opening, the thread launching (on this machine, about 0.05 to 1 s)."""


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
def test_ctrl_c_early_in_run_is_one_line_exit_130(block_project: Path, delay: float) -> None:
    code, said = interrupted_at(block_project, RUN, after_click(delay))
    assert_one_interrupted_line(code, said)
    assert_consistent(block_project)


@pytest.mark.parametrize("marker", ["the store file", "the tool entered"])
def test_ctrl_c_at_a_marker_is_one_line_exit_130(block_project: Path, marker: str) -> None:
    made = {
        "the store file": block_project / ".twelvefold" / "threads.db",
        "the tool entered": block_project / "entered",
    }[marker]

    def at_marker(running: Running) -> None:
        wait_for(made.exists, marker)

    code, said = interrupted_at(block_project, RUN, at_marker)
    assert_one_interrupted_line(code, said)
    if marker == "the tool entered":
        assert "nothing is lost" in said[0] and "twelvefold resume" in said[0], said
    assert_consistent(block_project)


SIGNALLED_AS_A_STORE_PIECE_IS_MADE = """\
import os
import signal
import sys

PIECE = sys.argv.pop(1)  # the file, or its folder
real_open, real_mkdir = os.open, os.mkdir


def signalled() -> None:
    signal.raise_signal(signal.SIGINT)  # its handler runs at the caller's next bytecodes


def opening(path, flags, *args, **kwargs):
    descriptor = real_open(path, flags, *args, **kwargs)
    if PIECE == "file" and str(path).endswith("threads.db") and flags & os.O_EXCL:
        signalled()
    return descriptor


def making(path, *args, **kwargs):
    real_mkdir(path, *args, **kwargs)
    if PIECE == "folder" and str(path).endswith(".twelvefold"):
        signalled()


os.open, os.mkdir = opening, making
sys.argv[0] = "twelvefold"
from twelvefold.command import main

main()
"""


@pytest.mark.parametrize("piece", ["file", "folder"])
def test_ctrl_c_just_as_the_store_is_made_leaves_nothing_behind(
    block_project: Path, piece: str
) -> None:
    """CI met it (1 run in 40 under load): a Ctrl-C between the store file's exclusive
    create and its record as made here left an empty file that every later command took
    for no store (`StoreNotFound`); the same for its folder. Each is made and recorded
    with the signal held back (runtime/newstore.py, `signals_held`)."""
    (block_project / "signalling.py").write_text(SIGNALLED_AS_A_STORE_PIECE_IS_MADE)
    done = subprocess.run(
        [sys.executable, "signalling.py", piece, *RUN],
        cwd=block_project, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert_one_interrupted_line(done.returncode, done.stderr.splitlines())
    assert not (block_project / ".twelvefold").exists(), sorted(
        p.name for p in (block_project / ".twelvefold").iterdir()
    )


def test_sigterm_while_the_tool_runs_stops_as_a_ctrl_c_does_and_lets_the_lease_go(
    block_project: Path,
) -> None:
    """A red team (rt13): `kill` (SIGTERM) of a `run` in its tool ended it at once with no
    word, and the thread's lease held `resume` off for its 30 s. It stops as on a Ctrl-C:
    one line, the lease let go, status 143 (as a shell reports a SIGTERM)."""

    def tool_entered(running: Running) -> None:
        wait_for((block_project / "entered").exists, "the tool entered")

    code, said = interrupted_at(block_project, RUN, tool_entered, how=signal.SIGTERM)
    assert code == 143, (code, said)
    assert len(said) == 1 and said[0].startswith("terminated: "), said
    assert "nothing is lost" in said[0] and "twelvefold resume" in said[0], said
    assert_consistent(block_project)  # `resume` runs it on at once: no lease held


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0])
def test_sigterm_early_in_any_command_is_one_line_exit_143(
    block_project: Path, delay: float
) -> None:
    args = ["test", "block.agent", "--examples", "100000", "--seed", "7"]
    code, said = interrupted_at(block_project, args, after_click(delay), how=signal.SIGTERM)
    assert code == 143, (code, said)
    assert len(said) == 1 and said[0].startswith("terminated: "), said
