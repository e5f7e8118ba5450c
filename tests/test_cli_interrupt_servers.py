"""Ctrl-C at any moment of `twelvefold serve` and `twelvefold worker`, from their first
import on: exit 130, and one `interrupted: ` line, the last, saying what the command had
done and what state the store is in (as `run` does, tests/test_cli_interrupt_early.py),
never a traceback.

Found by a red team: `serve` interrupted while it started said a bare `interrupted`;
once listening it stopped with uvicorn's log and no word of the threads; a `worker`
given Ctrl-C said `worker: stopped` and exited 0, as for SIGTERM.

A real subprocess, signalled at a range of delays counted from `click`'s import (the
readiness marker of tests/support/interrupts.py), and at markers of its own: the
store file made, the command's line saying it is running, a thread's tool entered.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.support.interrupts import Running, after_click, interrupted_at
from tests.support.waiting import wait_for
from twelvefold.runtime.store import SqliteStore, StoreNotFound

DELAYS = [0.0, 0.05, 0.2, 0.5, 1.0, 1.5, 2.5]
"""Seconds after `click` began to import: the command's modules loading, the agent
compiling, the store opening, the server or worker starting."""

STARTING_LINES = (
    "serving ",
    "WARNING: --insecure-local",
    "listening on ",
    "note: no API token yet",
    "INFO:",
    "worker: running ",
    "threads run on `twelvefold worker`s",
)
"""What these commands print on their way: any other line but the last is a fault."""


def assert_one_interrupted_line(code: int, said: list[str]) -> str:
    """The last line says what was interrupted; every line before it is progress."""
    assert code == 130, (code, said)
    assert said and said[-1].startswith("interrupted: "), said
    assert [line for line in said[:-1] if not line.startswith(STARTING_LINES)] == [], said
    assert said[-1].count("interrupted") == 1, said
    return said[-1]


# ---- serve ----------------------------------------------------------------------------

SERVE = ["serve", "block.agent", "--port", "0", "--insecure-local", "--grace", "1"]


def assert_store_opens(folder: Path) -> None:
    db = folder / ".twelvefold" / "threads.db"
    if not db.exists():
        return
    try:
        SqliteStore(db, create=False).close()
    except StoreNotFound:
        pytest.fail("an interrupted server left a file that is no store")


@pytest.mark.parametrize("delay", DELAYS)
def test_ctrl_c_while_serve_starts_is_one_line_exit_130(block_project: Path, delay: float) -> None:
    code, said = interrupted_at(block_project, SERVE, after_click(delay))
    line = assert_one_interrupted_line(code, said)
    assert "the server" in line or "had not started" in line, line
    assert_store_opens(block_project)


WHILE_THE_STORE_IS_FOUND = """\
import signal
import sys

from twelvefold.commands import options

found = options.configured_store


def finding():
    signal.raise_signal(signal.SIGINT)  # the handler runs here, and raises
    return found()


options.configured_store = finding
sys.argv[0] = "twelvefold"
from twelvefold.command import main

main()
"""


def test_ctrl_c_while_serve_finds_its_store_says_the_server_had_not_started(
    block_project: Path,
) -> None:
    """CI met it (1 run in 60 under load): a Ctrl-C while `serve` read the configuration
    for its store (`--db`'s wrapper, around the command's own body) ended with the generic
    "`serve` stopped before it finished". A long command's first line holds from the
    moment its callback is called."""
    import subprocess
    import sys

    (block_project / "finding.py").write_text(WHILE_THE_STORE_IS_FOUND)
    done = subprocess.run(
        [sys.executable, "finding.py", *SERVE],
        cwd=block_project, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    said = done.stderr.splitlines()
    assert done.returncode == 130, (done.returncode, said)
    assert said == [
        "interrupted: the server had not started: no store was opened, nothing was done"
    ], said
    assert_store_opens(block_project)


def test_ctrl_c_once_serve_listens_says_the_threads_stay_and_how_to_go_on(
    block_project: Path,
) -> None:
    def listening(running: Running) -> None:
        wait_for(lambda: running.saying("listening on ") is not None, "serve to listen")

    code, said = interrupted_at(block_project, SERVE, listening)
    line = assert_one_interrupted_line(code, said)
    assert "the server stopped" in line and ".twelvefold/threads.db" in line, line
    assert "`twelvefold serve`" in line, line


def test_ctrl_c_while_a_served_thread_runs_its_tool_leaves_it_to_run_on(
    block_project: Path,
) -> None:
    def tool_entered(running: Running) -> None:
        wait_for(lambda: running.saying("listening on ") is not None, "serve to listen")
        address = (running.saying("listening on ") or "").split()[2]
        request = urllib.request.Request(
            f"{address}/v1/agents/block/threads",
            data=json.dumps({"input": "go"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status in (200, 201, 202), response.status
        wait_for((block_project / "entered").exists, "the thread's tool to start")

    code, said = interrupted_at(block_project, SERVE, tool_entered)
    line = assert_one_interrupted_line(code, said)
    assert "the server stopped" in line and "`twelvefold serve`" in line, line
    store = SqliteStore(block_project / ".twelvefold" / "threads.db", create=False)
    try:
        ((thread, status),) = [(info.id, info.status) for info in store.threads()]
        assert status == "running" and store.lease(thread) is None, (status, thread)
    finally:
        store.close()


# ---- worker ---------------------------------------------------------------------------


@pytest.fixture
def worker_args(block_project: Path, postgres_url: str) -> list[str]:
    """`twelvefold worker` on a database `db upgrade` set up (the store's and the job
    queue's schemas), as a deploy runs it before its workers start."""
    from click.testing import CliRunner

    from twelvefold.cli import cli

    done = CliRunner().invoke(cli, ["db", "upgrade", "--store", postgres_url])
    assert done.exit_code == 0, done.output
    return ["worker", "block.agent", "--store", postgres_url, "--grace", "1"]


@pytest.mark.postgres
@pytest.mark.parametrize("delay", DELAYS)
def test_ctrl_c_while_a_worker_starts_is_one_line_exit_130(
    block_project: Path, worker_args: list[str], delay: float
) -> None:
    code, said = interrupted_at(block_project, worker_args, after_click(delay))
    line = assert_one_interrupted_line(code, said)
    assert "the worker" in line or "had not started" in line, line


@pytest.mark.postgres
def test_ctrl_c_once_a_worker_runs_is_an_interrupt_not_a_stop(
    block_project: Path, worker_args: list[str], postgres_url: str
) -> None:
    """SIGTERM stops a worker with exit 0 (a deploy's stop, tests/test_worker.py);
    Ctrl-C is an interrupt, said so, exit 130, its password never shown."""

    def running(running: Running) -> None:
        wait_for(lambda: running.saying("worker: running ") is not None, "the worker to run")

    code, said = interrupted_at(block_project, worker_args, running)
    line = assert_one_interrupted_line(code, said)
    assert "the worker stopped" in line and "`twelvefold worker`" in line, line
    assert "worker: stopped" not in said, said


def test_a_ctrl_c_python_wrapped_while_making_a_class_is_a_ctrl_c() -> None:
    """Found by this file's delays: on Python 3.11 a Ctrl-C landing in a descriptor's
    `__set_name__` (`functools.cached_property` has one) comes out as a `RuntimeError`
    caused by the `KeyboardInterrupt`, which was a traceback and exit 1."""
    import click
    from click.testing import CliRunner

    from twelvefold.commands.report import reporting

    class Interrupting:
        def __set_name__(self, owner: type, name: str) -> None:
            raise KeyboardInterrupt

    @click.command("making")
    def making() -> None:
        type("Made", (), {"field": Interrupting()})

    result = CliRunner().invoke(reporting(making), [])
    assert result.exit_code == 130, result.output
    assert result.stderr == "interrupted: `making` stopped before it finished\n", result.stderr


# ---- test ------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.5, 1.5, 3.0])
def test_ctrl_c_in_twelvefold_test_names_the_agent_and_the_seed(
    block_project: Path, delay: float
) -> None:
    """Found with serve's: `twelvefold test` interrupted said a bare `interrupted`."""
    args = ["test", "block.agent", "--examples", "100000", "--seed", "7"]
    code, said = interrupted_at(block_project, args, after_click(delay))
    assert code == 130, (code, said)
    assert len(said) == 1 and said[0].startswith("interrupted: "), said
    assert said[0] == "interrupted: the command had not started: nothing was done" or (
        "block.agent" in said[0] and "nothing was written" in said[0] and "--seed 7" in said[0]
    ), said


SIGNALLING = """\
import signal
import sys


class Signalling:
    '''stderr that sends this process a Ctrl-C the moment a line starts as `starts`.'''

    def __init__(self, stream, starts):
        self.stream, self.starts = stream, starts

    def write(self, text):
        written = self.stream.write(text)
        if text.startswith(self.starts):
            self.stream.flush()
            signal.raise_signal(signal.SIGINT)
        return written

    def __getattr__(self, name):
        return getattr(self.stream, name)


sys.stderr = Signalling(sys.stderr, sys.argv.pop(1))
sys.argv[0] = "twelvefold"
from twelvefold.command import main

main()
"""


def interrupted_as_it_says(folder: Path, starts: str, args: list[str]) -> str:
    """The last line of `twelvefold ARGS` sent Ctrl-C as it writes a line that starts
    with STARTS (checked as every interrupted line is)."""
    import subprocess
    import sys

    (folder / "signalling.py").write_text(SIGNALLING)
    done = subprocess.run(
        [sys.executable, "signalling.py", starts, *args],
        cwd=folder, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    said = [line for line in done.stderr.splitlines() if not line.startswith("INFO:")]
    return assert_one_interrupted_line(done.returncode, said)


def test_a_ctrl_c_the_moment_serve_says_it_listens_stops_the_server(block_project: Path) -> None:
    """CI: a Ctrl-C sent as soon as `listening on` was read got `the server had not
    started`: the line was written before the server's stop took over Ctrl-C. Here the
    Ctrl-C comes as the line is written, every time."""
    line = interrupted_as_it_says(block_project, "listening on ", SERVE)
    assert "the server stopped" in line, line


@pytest.mark.postgres
def test_a_ctrl_c_the_moment_a_worker_says_it_runs_stops_the_worker(
    block_project: Path, worker_args: list[str]
) -> None:
    line = interrupted_as_it_says(block_project, "worker: running ", worker_args)
    assert "the worker stopped" in line, line


SIGNALLED_AS_SERVE_SETS_UP = """\
import os
import signal
import sqlite3
import sys

SIGNAL = getattr(signal, sys.argv.pop(1))


class Signalling:
    '''stderr that sends this process SIGNAL as `serve` says `serving …`: inside its set-up,
    the new store and the server's tables open, the app not yet made. With HOLD_STORE,
    a connection of no command's first holds the store open (another command's).'''

    def __init__(self, stream):
        self.stream = stream
        self.held = []

    def write(self, text):
        written = self.stream.write(text)
        if text.startswith("serving "):
            if os.environ.get("HOLD_STORE"):
                held = sqlite3.connect(os.environ["HOLD_STORE"])
                held.execute("SELECT count(*) FROM sqlite_master").fetchone()
                self.held.append(held)
            self.stream.flush()
            signal.raise_signal(SIGNAL)
        return written

    def __getattr__(self, name):
        return getattr(self.stream, name)


sys.stderr = Signalling(sys.stderr)
sys.argv[0] = "twelvefold"
from twelvefold.command import main

main()
"""


def signalled_as_serve_sets_up(
    folder: Path, signal_name: str, hold_store: bool = False
) -> tuple[int, list[str]]:
    import os
    import subprocess
    import sys

    (folder / "signalled.py").write_text(SIGNALLED_AS_SERVE_SETS_UP)
    env = dict(os.environ)
    if hold_store:
        env["HOLD_STORE"] = str(folder / ".twelvefold" / "threads.db")
    done = subprocess.run(
        [sys.executable, "signalled.py", signal_name, *SERVE],
        cwd=folder, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    return done.returncode, [line for line in done.stderr.splitlines() if line]


@pytest.mark.parametrize(
    ("signal_name", "code", "word"),
    [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")],
)
def test_a_signal_as_serve_sets_up_removes_the_store_it_made(
    block_project: Path, signal_name: str, code: int, word: str
) -> None:
    """rt18: SIGINT or SIGTERM inside `serve`'s set-up, once it had made the store and
    opened it (and its tables), left the new, empty store behind and said the store "is
    as it was": the removal found the file open, by this very process, and kept it."""
    returned, said = signalled_as_serve_sets_up(block_project, signal_name)
    assert returned == code, (returned, said)
    assert said[-1] == (
        f"{word}: the server had not started: no thread ran; the store at"
        " .twelvefold/threads.db is as it was"
    ), said
    assert [line for line in said[:-1] if not line.startswith(STARTING_LINES)] == [], said
    left = sorted(p.name for p in (block_project / ".twelvefold").glob("threads.db*"))
    assert left == [], left  # (its compile cache, made as the agent was checked, stays)


def test_a_store_another_holds_open_is_kept_and_said_so(block_project: Path) -> None:
    """The store is kept when another connection has it open (another command started
    on the same new path): the last line says it was made and holds no thread."""
    returned, said = signalled_as_serve_sets_up(block_project, "SIGINT", hold_store=True)
    assert returned == 130, (returned, said)
    assert said[-1] == (
        "interrupted: the server had not started: no thread ran; the store at"
        " .twelvefold/threads.db was made for it and holds none"
    ), said
    assert_store_opens(block_project)
    assert (block_project / ".twelvefold" / "threads.db").exists()
