"""A Ctrl-C that Python loses still stops the command (twelvefold/interrupts.py).

CI met it: `twelvefold test --examples 100000` sent Ctrl-C half a second after it started
ran on past the test's two minutes. The `KeyboardInterrupt` was raised in importlib's
weakref callback for a module lock while the command's modules loaded; Python printed it
as "Exception ignored" and went on. Here a real `twelvefold` process meets the same
thing at the same moment, made certain: as the command's module is looked for, a weakref
callback runs, a SIGINT is raised and handled inside it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli_interrupt_early import assert_consistent
from tests.test_cli_interrupt_servers import worker_args  # noqa: F401  (a fixture)
from twelvefold.runtime.store import SqliteStore

LOSING = """\
import signal
import sys
import weakref

COMMAND_MODULE = sys.argv.pop(1)


def lose(_: object) -> None:
    # Python calls a weakref callback itself: a KeyboardInterrupt raised in it is lost.
    signal.raise_signal(signal.SIGINT)
    for _ in range(100):  # the handler runs at a loop's back edge, inside this callback
        pass


class Losing:
    def find_spec(self, name, path=None, target=None):
        if name == COMMAND_MODULE:
            sys.meta_path.remove(self)
            referent = type("Referent", (), {})()
            ref = weakref.ref(referent, lose)
            del referent
        return None


sys.meta_path.insert(0, Losing())
sys.argv[0] = "twelvefold"
from twelvefold.cli import main

main()
"""

COMMANDS = {  # the module of twelvefold/commands/ each loads, and its arguments
    "testcmd": ["test", "block.agent", "--examples", "100000", "--seed", "7"],
    "run": ["run", "block.agent", "--input", "go"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_ctrl_c_lost_as_the_command_loads_stops_it_before_it_starts(
    block_project: Path, command: str
) -> None:
    (block_project / "losing.py").write_text(LOSING)
    try:
        done = subprocess.run(
            [sys.executable, "losing.py", f"twelvefold.commands.{command}", *COMMANDS[command]],
            cwd=block_project, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    finally:
        (block_project / "release").touch()  # a `run` that went on reaches its end
    said = done.stderr.splitlines()
    assert done.returncode == 130, (done.returncode, said)
    assert said == ["interrupted: the command had not started: nothing was done"], said
    assert not (block_project / "entered").exists()
    assert_consistent(block_project)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["int", "term"])
def test_a_ctrl_c_once_the_report_is_out_leaves_the_commands_status(signum: int) -> None:
    """rt13: Ctrl-C just after `twelvefold test` printed its report ended the process by
    the signal (status -2, no line): Python gives its handlers back to the system as it
    shuts down; rt14: SIGTERM the same (-15). The signal is sent again and again from the
    last line on; the command either ends with its own status or, if one landed before
    its result was out, says so."""
    import time

    examples = Path(__file__).resolve().parent.parent / "examples"
    args = ["test", str(examples / "deploybot.agent"), "--examples", "20", "--seed", "1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "twelvefold", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        out = []
        for line in process.stdout:
            out.append(line)
            if line.startswith("shortest paths"):  # the report's last line
                break
        while process.poll() is None:
            process.send_signal(signum)
            time.sleep(0.002)
        said = process.communicate(timeout=60)[1].splitlines()
    finally:
        process.kill()
        process.wait()
    assert out and out[-1].startswith("shortest paths"), out
    word, status = ("interrupted", 130) if signum == signal.SIGINT else ("terminated", 143)
    assert (process.returncode, said) == (0, []) or (
        process.returncode == status and len(said) == 1 and said[0].startswith(f"{word}: ")
    ), (process.returncode, said)


LOSING_AT_AN_EVENT = """\
import signal
import sys
import weakref


def lose(_: object) -> None:
    signal.raise_signal(signal.SIGINT)  # handled in this callback: lost (see LOSING)
    for _ in range(100):
        pass


class Losing:
    '''stdout that loses a Ctrl-C as it writes the run's first event.'''

    def __init__(self, stream):
        self.stream, self.lost = stream, False

    def write(self, text):
        if not self.lost and text.lstrip().startswith("1 "):
            self.lost = True
            referent = type("Referent", (), {})()
            ref = weakref.ref(referent, lose)
            del referent
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


sys.stdout = Losing(sys.stdout)
sys.argv[0] = "twelvefold"
from twelvefold.command import main

main()
"""


def test_a_ctrl_c_lost_while_a_thread_runs_stops_it_at_its_next_event(
    block_project: Path,
) -> None:
    """It was seen only as a command started: one lost once the thread ran let it run
    on to its end (or its next pause), exit 0."""
    (block_project / "losing.py").write_text(LOSING_AT_AN_EVENT)
    (block_project / "release").touch()  # the tool returns at once, if it is reached
    done = subprocess.run(
        [sys.executable, "losing.py", *COMMANDS["run"]],
        cwd=block_project, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    said = done.stderr.splitlines()
    assert done.returncode == 130, (done.returncode, done.stdout, said)
    assert len(said) == 1 and said[0].startswith("interrupted: "), said
    assert "twelvefold resume" in said[0], said
    # rt17: the check came before the event was printed, so the last event stored was
    # never shown; what is printed is what the log holds.
    printed = [line for line in done.stdout.splitlines() if line.strip()[:1].isdigit()]
    store = SqliteStore(block_project / ".twelvefold" / "threads.db", create=False)
    try:
        (info,) = store.threads()
        assert len(printed) == info.seq, (printed, info.seq)
    finally:
        store.close()
    assert_consistent(block_project)


SIGNALLED_AS_THE_COMMAND_LINE_LOADS = """\
import os
import signal
import sys

SIGNAL = int(sys.argv.pop(1))


class Signalling:
    # Sends this process SIGNAL as `twelvefold.cli` is looked for: the handler is in
    # place (twelvefold/command.py), the command line module's own `try` not yet.

    def find_spec(self, name, path=None, target=None):
        if name == "twelvefold.cli":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), SIGNAL)
            for _ in range(100):  # the handler runs here, and raises
                pass
        return None


sys.meta_path.insert(0, Signalling())
sys.argv[0] = "twelvefold"
from twelvefold.command import main

main()
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["int", "term"])
def test_a_signal_as_the_command_line_loads_is_one_line(tmp_path: Path, signum: int) -> None:
    """rt14: one landing as twelvefold/command.py imported the command line printed a
    traceback and ended the process by SIGINT, even for a SIGTERM."""
    (tmp_path / "signalling.py").write_text(SIGNALLED_AS_THE_COMMAND_LINE_LOADS)
    done = subprocess.run(
        [sys.executable, "signalling.py", str(int(signum)), "threads", "--db", "x.db"],
        cwd=tmp_path, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    word, status = ("interrupted", 130) if signum == signal.SIGINT else ("terminated", 143)
    expected = [f"{word}: the command had not started: nothing was done"]
    assert (done.returncode, done.stderr.splitlines()) == (status, expected), done.stderr


def threads_once_click_loads() -> tuple[subprocess.Popen[str], list[str]]:
    """`twelvefold threads` started, once its command line began to load `click` (before,
    Python itself is starting): the process and what it said until then."""
    from tests.support.interrupts import CLICK_IMPORTED

    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "twelvefold", "threads", "--db", "x.db"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    said = []
    for line in process.stderr:
        if CLICK_IMPORTED.match(line):
            break
        if not line.startswith("import time:"):
            said.append(line)
    return process, said


def test_a_burst_of_signals_ends_the_command_with_one_line() -> None:
    """rt15: 40 Ctrl-Cs and SIGTERMs back to back hung about one `twelvefold threads`
    in four for good (the handler set a `threading.Event`; a second signal, handled
    inside the first one's `set`, waited on the lock that `set` held), and a second
    signal after the first one's line ended the process by the signal or as click's
    `Aborted!`. Eight processes, each sent a burst at another moment once twelvefold's
    command line began to load (before, Python itself is starting)."""
    import time

    for attempt in range(8):
        process, said = threads_once_click_loads()
        time.sleep(0.01 * attempt)
        for count in range(40):
            if process.poll() is not None:
                break
            process.send_signal(signal.SIGINT if count % 2 == 0 else signal.SIGTERM)
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"still running 30 s after a burst of signals (attempt {attempt})")
        said += [
            line for line in err.splitlines(keepends=True) if not line.startswith("import time:")
        ]
        assert process.returncode in (130, 143, 1), (process.returncode, said)
        assert len(said) == 1 and "Traceback" not in err and "Aborted" not in err, said


def test_signals_after_the_first_ones_line_leave_its_status() -> None:
    """rt16: a Ctrl-C as the command loaded, then SIGTERMs while it said so and ended:
    the process died by the later signal (status -15) after its line, in one run of
    five: the interrupted line's exit did not make later signals change nothing."""
    import time

    for attempt in range(5):
        process, _ = threads_once_click_loads()
        time.sleep(0.02 * attempt)
        process.send_signal(signal.SIGINT)
        while process.poll() is None:
            time.sleep(0.005)
            process.send_signal(signal.SIGTERM)
        err = process.communicate(timeout=30)[1]
        said = [line for line in err.splitlines() if not line.startswith("import time:")]
        assert process.returncode in (130, 1), (process.returncode, said)
        assert len(said) == 1 and "Traceback" not in err, said


TURNED_INTO_A_LIBRARY_ERROR = """\
import signal
import sys

MODULE = sys.argv.pop(1)


class SchemaError(Exception):
    '''What pydantic-core raises when a Ctrl-C lands in its Rust code as a model class is
    built: its own error, naming the interrupt only in its message.'''


class Turning:
    def find_spec(self, name, path=None, target=None):
        if name == MODULE:
            sys.meta_path.remove(self)
            try:
                signal.raise_signal(signal.SIGINT)
                for _ in range(100):  # the handler runs here, and raises
                    pass
            except KeyboardInterrupt:
                message = "Error building `literal` serializer: KeyboardInterrupt: "
                raise SchemaError(message) from None
        return None


sys.meta_path.insert(0, Turning())
sys.argv[0] = "twelvefold"
from twelvefold.command import main

main()
"""

SERVE = ["serve", "block.agent", "--port", "0", "--insecure-local"]
TURNED = {  # where the Ctrl-C lands: the command's own module, or one it loads as it runs
    "as-serve-checks-its-agents": ("fastapi", SERVE, "the server had not started"),
    "as-serve-loads": ("twelvefold.commands.serve", SERVE, "the command had not started"),
    "as-the-command-line-loads": ("twelvefold.cli", SERVE, "the command had not started"),
    "as-run-loads": ("twelvefold.commands.run", COMMANDS["run"], "the command had not started"),
}


@pytest.mark.parametrize("where", sorted(TURNED))
def test_a_ctrl_c_a_library_turned_into_its_own_error_is_still_a_ctrl_c(
    block_project: Path, where: str
) -> None:
    """CI met it (rt16): a Ctrl-C as `serve` imported fastapi landed in pydantic-core,
    which raised a `SchemaError` whose message ends `KeyboardInterrupt: `; the command
    showed that traceback and exited 1. Whatever a command raises once a Ctrl-C came is
    that Ctrl-C: one line, status 130."""
    module, args, line = TURNED[where]
    code, said = driven(block_project, TURNED_INTO_A_LIBRARY_ERROR, module, *args)
    assert code == 130, (code, said)
    assert len(said) == 1 and said[0].startswith(f"interrupted: {line}"), said
    assert_consistent(block_project)


def driven(folder: Path, driver: str, *args: str) -> tuple[int, list[str]]:
    """(exit status, stderr lines) of the `twelvefold` program run by `driver` (a script
    that sets the moment up, then calls the program's entry point) with `args`, in
    `folder`; a minute at most (a command that does not stop fails the test)."""
    (folder / "driver.py").write_text(driver)
    done = subprocess.run(
        [sys.executable, "driver.py", *args],
        cwd=folder, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.returncode, done.stderr.splitlines()


LONG_RUNNING = {  # a command that runs until stopped, a module it loads as it starts
    "serve": ("fastapi", "the server had not started"),
    "serve-with-its-new-store": (
        "uvicorn",  # (imported once the store is made)
        "the server had not started: no thread ran; the store at .twelvefold/threads.db was "
        "made for it and holds none",
    ),
    "worker": ("procrastinate", "the worker had not started"),
    "worker-later": ("instructor", "the worker had not started"),
}


@pytest.mark.parametrize("command", sorted(LONG_RUNNING))
def test_a_ctrl_c_lost_as_a_server_starts_stops_it_before_it_runs(
    block_project: Path, command: str, request: pytest.FixtureRequest
) -> None:
    """A red team's run (rt17): a Ctrl-C lost while `serve` imported fastapi (pydantic-core
    drops one raised in its Rust code; a weakref callback loses one) left the server
    listening: it ran on until killed; `worker` the same. Each checks for one before it
    says it runs."""
    module, line = LONG_RUNNING[command]
    # A worker's database is set up by `db upgrade` first, as a deploy's workers start.
    args = SERVE if command.startswith("serve") else request.getfixturevalue("worker_args")
    code, said = driven(block_project, LOSING, module, *args)
    assert code == 130, (code, said)
    assert said and said[-1].startswith(f"interrupted: {line}"), said


def test_a_stop_line_names_no_thread_that_was_never_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rt20: a Ctrl-C as asyncio loaded left it half-imported; reading the thread back
    then raised `NameError`, and the stop line named a thread that was never stored
    (`twelvefold show T` then said there is none). The store's row is asked instead."""
    from twelvefold.commands.run import where_it_stopped
    from twelvefold.runtime.api import Runtime

    def half_loaded(self: Runtime, thread_id: str) -> None:
        raise NameError("name 'base_events' is not defined")

    monkeypatch.setattr(Runtime, "get", half_loaded)
    store = SqliteStore(tmp_path / "t.db")
    try:
        line = where_it_stopped(Runtime(store), "5ad3b38c270e095b")
    finally:
        store.close()
    assert line == "no thread was started"
