"""Ownership (issue 8, item 3): while a process works on a thread, no other process can.

1. The lease contract, the same on both stores: one holder at a time, a larger fencing
   token with every new lease, takeover once a lease lapsed, and an append (or renewal)
   under a lease that lapsed or was taken over refused with nothing written.
2. Two real processes and the real CLI: process A is inside a slow tool (it waits on a
   barrier file); `twelvefold resume` from a second process is refused naming A's lease,
   for a keyless and a keyed tool. After A is SIGKILLed and its lease lapses, a resume
   takes over under the crash rules: keyless -> interrupted, keyed -> run again with the
   same key.
3. Fencing: a process that stalled (SIGSTOP) past its lease while another took the thread
   over cannot append when it wakes up.

Each process check also runs against a deliberately broken store (one that ignores
leases, one that ignores fencing) and must find the breakage.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_helpers import FIXTURES, RecordingNotifier
from tests.support.openai_server import Reply, ScriptedOpenAI
from tests.support.waiting import wait_for
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.lease import Lease, LeaseHeld, LeaseLost, LeaseSettingError
from twelvefold.runtime.model import OpenAIModel
from twelvefold.runtime.store import (
    Conflict,
    EventStore,
    MemoryStore,
    SqliteStore,
    StoreError,
    ThreadInfo,
)
from twelvefold.runtime.types import (
    Event,
    Started,
    StepFailed,
    ToolResult,
    ToolStarted,
)

SLOW = FIXTURES / "slow.agent"
LEASE = 2.0
"""Seconds a lease lasts in these tests (renewed every third of that while a process lives)."""
FORK = multiprocessing.get_context("fork")
TWELVEFOLD = Path(sys.executable).with_name("twelvefold")


# ---- 1. the contract -------------------------------------------------------------------


def _thread(store: EventStore, thread_id: str = "t") -> Codec:
    codec = Codec()
    info = ThreadInfo(thread_id, "a", "o", "running", "a", 1, "x", "x")
    store.create(info, [Started(step="a", input="hi")], codec)
    return codec


def test_lease_lengths_come_from_the_setting_and_bad_ones_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TWELVEFOLD_LEASE_SECONDS", "7.5")
    assert Runtime(MemoryStore()).aio.engine.lease_seconds == 7.5
    assert Runtime(MemoryStore(), lease_seconds=3).aio.engine.lease_seconds == 3
    for bad in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv("TWELVEFOLD_LEASE_SECONDS", bad)
        with pytest.raises(LeaseSettingError, match="positive number"):
            Runtime(MemoryStore())


# ---- the processes -----------------------------------------------------------------------


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


class SlowModel:
    """The scripted server's answers: the first request chooses the slow tool, every later
    one (whichever process asks) stops."""

    def __init__(self, server: ScriptedOpenAI, kind: str) -> None:
        self.kind = kind
        self.asked = 0
        self._lock = threading.Lock()
        server.responder = self

    def __call__(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.asked += 1
            first = self.asked == 1
        choice = {"type": self.kind, "n": 0} if first else {"type": "Done", "n": 1}
        return Reply(arguments={"choice": choice})


def stored_events(db: Path, thread_id: str, cache: Path) -> list[Event]:
    store = SqliteStore(db)
    rt = Runtime(store, cache_dir=cache)
    events = rt.events(thread_id)
    store.close()
    return events


def only_thread(db: Path) -> str:
    store = SqliteStore(db)
    try:
        (info,) = store.threads()
    finally:
        store.close()
    return info.id


def lease_of(db: Path, thread_id: str) -> Lease | None:
    store = SqliteStore(db)
    try:
        return store.lease(thread_id)
    finally:
        store.close()


# ---- 2. the CLI from two processes -------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path, openai_server: ScriptedOpenAI) -> Path:
    """The working directory of the CLI processes, with their environment."""
    return tmp_path


def cli_env(folder: Path, server: ScriptedOpenAI) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWELVEFOLD_", "OPENAI_"))}
    return {
        **env,
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "test",
        "SLOW_DIR": str(folder),
        "TWELVEFOLD_LEASE_SECONDS": str(LEASE),
        "TWELVEFOLD_DB": str(folder / "threads.db"),
    }


def start_cli(folder: Path, server: ScriptedOpenAI, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(TWELVEFOLD), *args],
        cwd=folder,
        env=cli_env(folder, server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(folder: Path, server: ScriptedOpenAI, *args: str) -> tuple[int, str, str]:
    process = start_cli(folder, server, *args)
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def run_into_the_tool(
    folder: Path, server: ScriptedOpenAI, kind: str
) -> tuple[subprocess.Popen[str], str]:
    """Process A: `twelvefold run` the slow agent until it is inside the `kind` tool."""
    SlowModel(server, kind)
    first = start_cli(folder, server, "run", str(SLOW), "--input", "go")
    wait_for(lambda: len(lines(folder / "entered.log")) == 1, "process A to enter the tool")
    return first, only_thread(folder / "threads.db")


@pytest.mark.parametrize("kind", ["Keyless", "Keyed"])
def test_resume_from_a_second_process_is_refused_while_the_first_is_inside_a_tool(
    kind: str, folder: Path, openai_server: ScriptedOpenAI
) -> None:
    first, thread_id = run_into_the_tool(folder, openai_server, kind)

    code, out, err = run_cli(folder, openai_server, "resume", thread_id)
    assert code == 1, out + err
    assert err.count("\n") == 1 and err.startswith("error: "), err  # one line, no traceback
    assert f"thread {thread_id} is being advanced by " in err
    assert f":{first.pid}:" in err and "lease until 20" in err
    # A person's retry or decision, and a fork, are refused the same way.
    code, out, err = run_cli(folder, openai_server, "resume", thread_id, "--retry")
    assert code == 1 and f":{first.pid}:" in err and err.count("\n") == 1, out + err
    store = SqliteStore(folder / "threads.db")
    rt = Runtime(store, cache_dir=folder / ".cache")
    with pytest.raises(LeaseHeld, match=f":{first.pid}:"):
        rt.fork(thread_id, 1)
    with pytest.raises(LeaseHeld, match=f":{first.pid}:"):
        rt.resume(thread_id, approve=True)
    store.close()
    assert len(lines(folder / "entered.log")) == 1  # the tool did not start a second time

    (folder / "release").touch()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    events = stored_events(folder / "threads.db", thread_id, folder / ".cache")
    assert not any(isinstance(e, StepFailed) for e in events)  # no Interrupted, no conflict
    assert sum(isinstance(e, ToolResult) for e in events) == 1
    assert len(lines(folder / "ran.log")) == 1
    assert lease_of(folder / "threads.db", thread_id) is None  # let go when it finished


@pytest.mark.parametrize("kind", ["Keyless", "Keyed"])
def test_after_the_owner_is_killed_and_its_lease_lapses_a_resume_takes_over(
    kind: str, folder: Path, openai_server: ScriptedOpenAI
) -> None:
    first, thread_id = run_into_the_tool(folder, openai_server, kind)
    first.kill()
    first.communicate(timeout=60)
    wait_for(lambda: lease_of(folder / "threads.db", thread_id) is None, "A's lease to lapse")

    (folder / "release").touch()  # a tool run again passes the barrier at once
    code, out, err = run_cli(folder, openai_server, "resume", thread_id)
    events = stored_events(folder / "threads.db", thread_id, folder / ".cache")
    (started,) = [e for e in events if isinstance(e, ToolStarted)]
    entered = lines(folder / "entered.log")
    if kind == "Keyless":  # it may have run: interrupted, for a person's retry
        assert code == 1, out + err
        assert isinstance(events[-1], StepFailed) and events[-1].error.type == "Interrupted"
        assert len(entered) == 1 and lines(folder / "ran.log") == []
    else:  # run again with the key of its start, so the tool can tell it is the same call
        assert code == 0, out + err
        assert "finished" in out and sum(isinstance(e, ToolResult) for e in events) == 1
        assert [line.split()[2] for line in entered] == [started.key, started.key]
        assert [line.split()[2] for line in lines(folder / "ran.log")] == [started.key]


# ---- processes with a store of the test's choosing -----------------------------------------


class LeaselessStore(SqliteStore):
    """Broken on purpose: sees no lease on any thread, and takes a thread's lease whoever
    holds it."""

    def lease(self, thread_id: str) -> Lease | None:
        return None

    def acquire(self, thread_id: str, owner: str, seconds: float) -> Lease:
        with self._lock, self._transaction():
            self._db.execute("UPDATE threads SET lease_owner = NULL WHERE id = ?", (thread_id,))
        return super().acquire(thread_id, owner, seconds)


class FencelessStore(SqliteStore):
    """Broken on purpose: appends and renews under any lease, lapsed or taken over."""

    def _check_holder(self, thread_id: str, lease: Lease | None, *columns: Any) -> None:
        pass


def worker(
    store_class: type[SqliteStore],
    folder: Path,
    base_url: str,
    thread_id: str,
    launch: bool,
) -> None:
    """Launch or resume the slow thread; write how it ended to outcome-<pid>."""
    os.environ["SLOW_DIR"] = str(folder)
    store = store_class(folder / "threads.db")
    model = OpenAIModel(
        model="scripted-model", base_url=base_url, api_key="test", transport_retries=0
    )
    rt = Runtime(
        store,
        model=model,
        notifier=RecordingNotifier(),
        cache_dir=folder / ".cache",
        lease_seconds=LEASE,
    )
    try:
        if launch:
            outcome = rt.launch(SLOW, "go", thread_id=thread_id).status
        else:
            outcome = rt.resume(thread_id).status
    except LeaseHeld:
        outcome = "held"
    except LeaseLost:
        outcome = "lost"
    except Conflict:
        outcome = "conflict"
    except BaseException as exc:
        outcome = f"error {type(exc).__name__}: {exc}"
    (folder / f"outcome-{os.getpid()}").write_text(outcome)
    os._exit(0)


def start_worker(
    store_class: type[SqliteStore], folder: Path, server: ScriptedOpenAI, launch: bool
) -> Any:
    process = FORK.Process(
        target=worker, args=(store_class, folder, server.base_url, "slow-thread", launch)
    )
    process.start()
    return process


def outcome(folder: Path, process: Any) -> str:
    process.join(120)
    path = folder / f"outcome-{process.pid}"
    return path.read_text() if path.exists() else f"no outcome (exit {process.exitcode})"


def warm(folder: Path) -> None:
    """Compile the agent once, before processes race to."""
    Runtime(MemoryStore(), cache_dir=folder / ".cache").agent(SLOW)


def resume_while_the_owner_works(
    store_class: type[SqliteStore], kind: str, folder: Path, server: ScriptedOpenAI
) -> list[str]:
    """A works inside the tool; B (on `store_class`) resumes. Returns what went wrong."""
    warm(folder)
    SlowModel(server, kind)
    first = start_worker(SqliteStore, folder, server, launch=True)
    wait_for(lambda: len(lines(folder / "entered.log")) == 1, "A to enter the tool")
    second = start_worker(store_class, folder, server, launch=False)
    wait_for(
        lambda: not second.is_alive() or len(lines(folder / "entered.log")) > 1,
        "B to stop or to enter the tool",
    )
    entered = len(lines(folder / "entered.log"))
    (folder / "release").touch()
    results = outcome(folder, first), outcome(folder, second)
    problems = []
    if results != ("finished", "held"):
        problems.append(f"expected A to finish and B to be refused, got {results}")
    if entered != 1:
        problems.append(f"the tool was entered {entered} times while A was inside it")
    events = stored_events(folder / "threads.db", "slow-thread", folder / ".cache")
    if any(isinstance(e, StepFailed) for e in events):
        problems.append("a failure was recorded while A was working")
    return problems


@pytest.mark.parametrize("kind", ["Keyless", "Keyed"])
def test_a_resume_racing_a_working_process_is_refused(
    kind: str, folder: Path, openai_server: ScriptedOpenAI
) -> None:
    assert resume_while_the_owner_works(SqliteStore, kind, folder, openai_server) == []


@pytest.mark.parametrize("kind", ["Keyless", "Keyed"])
def test_the_refusal_test_catches_a_store_that_ignores_leases(
    kind: str, folder: Path, openai_server: ScriptedOpenAI
) -> None:
    assert resume_while_the_owner_works(LeaselessStore, kind, folder, openai_server) != []


def stalled_owner_wakes_up(
    store_class: type[SqliteStore], folder: Path, server: ScriptedOpenAI
) -> list[str]:
    """A (on `store_class`) is inside the keyed tool and is stopped past its lease; B takes
    over and runs the tool again with the same key; A wakes up and its tool returns first.
    Returns what went wrong."""
    warm(folder)
    SlowModel(server, "Keyed")
    first = start_worker(store_class, folder, server, launch=True)
    wait_for(lambda: len(lines(folder / "entered.log")) == 1, "A to enter the tool")
    os.kill(first.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: lease_of(folder / "threads.db", "slow-thread") is None, "A's lease")
        second = start_worker(SqliteStore, folder, server, launch=False)
        wait_for(lambda: len(lines(folder / "entered.log")) == 2, "B to enter the tool")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    (folder / f"release-{first.pid}").touch()
    first_outcome = outcome(folder, first)
    (folder / f"release-{second.pid}").touch()
    results = first_outcome, outcome(folder, second)
    problems = []
    if results != ("lost", "finished"):
        problems.append(f"expected A to lose the thread and B to finish it, got {results}")
    events = stored_events(folder / "threads.db", "slow-thread", folder / ".cache")
    results_stored = sum(isinstance(e, ToolResult) for e in events)
    if results_stored != 1:
        problems.append(f"{results_stored} tool results stored for one call")
    return problems


def test_a_process_that_lost_its_lease_cannot_append(
    folder: Path, openai_server: ScriptedOpenAI
) -> None:
    assert stalled_owner_wakes_up(SqliteStore, folder, openai_server) == []


def test_the_fencing_test_catches_a_store_that_ignores_the_lease_on_append(
    folder: Path, openai_server: ScriptedOpenAI
) -> None:
    assert stalled_owner_wakes_up(FencelessStore, folder, openai_server) != []


class FailingRenewals(MemoryStore):
    """A store that cannot renew leases (its disk is gone); `tried` is set at the first try."""

    def __init__(self) -> None:
        super().__init__()
        self.tried = threading.Event()

    def renew(self, lease: Lease, seconds: float) -> Lease:
        self.tried.set()
        raise OSError("the store's disk is gone")


def test_a_process_that_could_not_renew_starts_no_new_call(
    tmp_path: Path, openai_server: ScriptedOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLOW_DIR", str(tmp_path))
    (tmp_path / "release").touch()  # a tool that ran anyway would not hold the test up
    store = FailingRenewals()

    def answer_after_the_failed_renewal(body: dict[str, Any]) -> Reply:
        store.tried.wait(60)  # the model call is in flight when the renewal fails
        return Reply(arguments={"choice": {"type": "Keyed", "n": 0}})

    openai_server.responder = answer_after_the_failed_renewal
    model = OpenAIModel(
        model="scripted-model", base_url=openai_server.base_url, api_key="test", transport_retries=0
    )
    rt = Runtime(store, model=model, cache_dir=tmp_path / "cache", lease_seconds=3)
    with pytest.raises(LeaseLost, match="no longer holds its lease"):
        rt.launch(SLOW, "go", thread_id="t")
    assert lines(tmp_path / "entered.log") == []
    assert not any(isinstance(e, ToolStarted) for e in store.load("t", Codec()))
    assert store.lease("t") is None  # let go on the way out


@pytest.mark.parametrize("until", [1e308, -1e308])
def test_a_hand_edited_lease_time_is_a_refusal_or_a_takeover_not_a_traceback(
    tmp_path: Path, until: float
) -> None:
    # Found by the red team: a lease_until out of datetime's range (edited by hand in the
    # SQLite file) raised OverflowError while the refusal was being worded.
    import sqlite3

    store = SqliteStore(tmp_path / "threads.db")
    _thread(store)
    db = sqlite3.connect(tmp_path / "threads.db")
    with db:
        db.execute(
            "UPDATE threads SET lease_owner = 'someone', lease_until = ? WHERE id = 't'", (until,)
        )
    db.close()
    if until > 0:
        with pytest.raises(LeaseHeld, match="someone") as held:
            store.acquire("t", "me", 60)
        assert "lease until " in str(held.value)
    else:
        assert store.acquire("t", "me", 60).owner == "me"
    store.close()


@pytest.mark.parametrize(
    ("token", "until"), [("abc", None), (2**63 - 1, None), (1, "zz"), (1, b"\x00")]
)
def test_hand_edited_lease_columns_are_a_store_error_not_a_traceback(
    tmp_path: Path, token: object, until: object
) -> None:
    # Found by the red team: a lease_token that is text or the largest SQLite integer, or a
    # lease_until that is text, raised TypeError / OverflowError from `resume`.
    import sqlite3

    store = SqliteStore(tmp_path / "threads.db")
    _thread(store)
    db = sqlite3.connect(tmp_path / "threads.db")
    with db:
        db.execute(
            "UPDATE threads SET lease_owner = 'x', lease_token = ?, lease_until = ? WHERE id = 't'",
            (token, until),
        )
    db.close()
    with pytest.raises(StoreError, match="lease"):
        store.acquire("t", "me", 60)
    with pytest.raises(StoreError, match="lease"):  # `fork` and `cancel` look at it first
        store.lease("t")
    store.close()
