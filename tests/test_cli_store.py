"""The thread store as a user can break it: a path that does not exist, a damaged SQLite
file, event JSON edited by hand, a ROLLBACK that fails. Every command answers with one line
and exit 1 (or works), never a traceback; only `run` creates a store.

The damaged files are real: a store written by `twelvefold run` and then truncated,
overwritten at random offsets (a fixed seed) or edited with sqlite3."""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.runtime_helpers import EXAMPLES, write_cassette
from twelvefold.cli import cli
from twelvefold.commands.options import removed_if_refused
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.store import SqliteStore, StoreError, StoreNotFound, ThreadInfo
from twelvefold.runtime.types import Started


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def assert_one_clear_line_or_success(result: Result) -> None:
    """Exit 0, or exit 1 with one `error:` line; never an exception out of the command."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"the command raised {result.exception!r}:\n{result.output}")
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1), result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1, result.output  # else exit 1 is a thread that failed, shown


@pytest.fixture(scope="module")
def waiting_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real store holding one deploybot thread that waits for an approval."""
    folder = tmp_path_factory.mktemp("store")
    cassette = write_cassette(folder / "deploy.jsonl")
    db = folder / "threads.db"
    result = invoke(
        "run",
        str(EXAMPLES / "deploybot.agent"),
        "--input",
        "deploy v1.2.3 to production",
        "--cassette",
        str(cassette),
        "--db",
        str(db),
        "--json",
    )
    assert result.exit_code == 0, result.output
    # One file: fold the write-ahead log in, so damaging the file damages the data.
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db, json.loads(result.output.splitlines()[-1])["thread_id"]


def copy_of(store: tuple[Path, str], folder: Path) -> tuple[Path, str]:
    db, thread = store
    target = folder / "threads.db"
    shutil.copy(db, target)
    return target, thread


def commands(db: Path, thread: str) -> list[list[str]]:
    cassette = write_cassette(db.parent / "deploy.jsonl")
    return [
        ["show", thread, "--db", str(db)],
        ["show", thread, "--db", str(db), "--json"],
        ["threads", "--db", str(db)],
        ["resume", thread, "--approve", "--db", str(db), "--cassette", str(cassette)],
    ]


# ---- a store that is not there ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["resume", "th-1", "--approve"],
        ["resume", "th-1"],
        ["show", "th-1"],
        ["show", "th-1", "--json"],
        ["threads"],
        ["threads", "--json"],
    ],
)
def test_a_store_that_does_not_exist_is_named_and_not_created(
    tmp_path: Path, args: list[str]
) -> None:
    db = tmp_path / "nowhere" / "x.db"
    result = invoke(*args, "--db", str(db))
    said = f"no thread store at {db} (`twelvefold run` creates one; check --db and TWELVEFOLD_DB)"
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {said}"
    # --json: the same problem as one JSON object on stdout; otherwise stdout stays empty.
    shown = json.loads(result.stdout)["error"]["message"] if "--json" in args else result.stdout
    assert shown == (said if "--json" in args else "")
    assert not db.parent.exists()


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ('[1, "x", {"kind": 5}]', ": event 1 does not decode for this agent (a JSON number, not"),
        # Found by a red team: valid JSON of the wrong shape showed Python's words
        # (`'int' object has no attribute 'get'`), or click's usage error (exit 2).
        ("[1]", ": event 1 does not decode for this agent (a JSON number, not an object)"),
        ("{}", " is not an event log: it holds a JSON object, not a list of events"),
        ('"x"', " is not an event log: it holds a JSON string, not a list of events"),
        ('[{"kind": 5}]', ": event 1 does not decode for this agent (unknown event kind 5)"),
        ('[{"kind": "started"}]', ": event 1 does not decode for this agent (no `step`)"),
    ],
)
def test_graph_of_events_that_are_not_events_is_one_line(
    tmp_path: Path, content: str, said: str
) -> None:
    events = tmp_path / "events.json"
    events.write_text(content)
    result = invoke("graph", str(EXAMPLES / "deploybot.agent"), "--events", str(events))
    assert result.exit_code == 1, result.output
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {events}{said}"), result.stderr
    assert "object has no attribute" not in result.stderr


def test_the_library_refuses_a_missing_store_only_when_asked(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound):
        SqliteStore(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()
    SqliteStore(tmp_path / "made.db").close()  # the default still creates one
    assert (tmp_path / "made.db").is_file()


# ---- a damaged file --------------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "threads.db"
    db.write_bytes(b"this is not SQLite\n" * 100)
    with pytest.raises(StoreError, match="is not a thread store SQLite can open"):
        SqliteStore(db)
    graph = ["graph", str(EXAMPLES / "deploybot.agent"), "--thread", "th-1", "--db", str(db)]
    for args in [*commands(db, "th-1"), graph]:
        result = invoke(*args)
        assert result.exit_code == 1
        assert_one_clear_line_or_success(result)


def damaged_copies(store: tuple[Path, str], folder: Path, count: int) -> list[Path]:
    """Copies of the store, each truncated or overwritten in a few places (seeded)."""
    rng = random.Random(9)
    data = store[0].read_bytes()
    copies = []
    for i in range(count):
        damaged = bytearray(data)
        if i % 3 == 0:
            damaged = damaged[: rng.randrange(1, len(data))]
        else:
            for _ in range(rng.randrange(1, 8)):
                at = rng.randrange(len(damaged))
                size = rng.choice([1, 4, 64, 512])
                damaged[at : at + size] = rng.randbytes(min(size, len(damaged) - at))
        target = folder / f"damaged{i}.db"
        target.write_bytes(bytes(damaged))
        copies.append(target)
    return copies


def test_damaged_sqlite_files_give_one_line_never_a_traceback(
    waiting_store: tuple[Path, str], tmp_path: Path
) -> None:
    failures = 0
    for db in damaged_copies(waiting_store, tmp_path, 24):
        for args in commands(db, waiting_store[1]):
            result = invoke(*args)
            assert_one_clear_line_or_success(result)
            failures += result.exit_code == 1
    assert failures  # the damage was real: some commands could not go on


# ---- event JSON edited by hand -----------------------------------------------------------

EDITS = [
    lambda body: "{not json",
    lambda body: "",
    lambda body: "[]",
    lambda body: "{}",
    lambda body: json.dumps({**json.loads(body), "kind": "no_such_event"}),
    lambda body: json.dumps({**json.loads(body), "kind": 5}),
    lambda body: json.dumps({k: v for k, v in json.loads(body).items() if k != "step"}),
    lambda body: json.dumps({**json.loads(body), "step": "no_such_step"}),
    lambda body: json.dumps({**json.loads(body), "step": ["a"]}),
    lambda body: json.dumps({**json.loads(body), "usage": "fast"}),
    lambda body: json.dumps({**json.loads(body), "usage": {"tokens": 1}}),
    lambda body: json.dumps({**json.loads(body), "output": {"type": "Nope"}}),
    lambda body: json.dumps({**json.loads(body), "output": 5}),
    lambda body: json.dumps({**json.loads(body), "error": "boom"}),
    lambda body: json.dumps({**json.loads(body), "kind": "approved"}),
]


@pytest.mark.parametrize("edit", range(len(EDITS)))
@pytest.mark.parametrize("seq", [1, 2, 4])
def test_hand_edited_event_json_gives_one_line_never_a_traceback(
    waiting_store: tuple[Path, str], tmp_path: Path, edit: int, seq: int
) -> None:
    db, thread = copy_of(waiting_store, tmp_path)
    with sqlite3.connect(db) as connection:
        (body,) = connection.execute("SELECT body FROM events WHERE seq = ?", (seq,)).fetchone()
        connection.execute("UPDATE events SET body = ? WHERE seq = ?", (EDITS[edit](body), seq))
        connection.execute("UPDATE threads SET snapshot = NULL")
    for args in commands(db, thread):
        assert_one_clear_line_or_success(invoke(*args))


@pytest.mark.parametrize(
    ("column", "value"), [("step", b"\xff"), ("agent", b"a"), ("seq", "many"), ("updated_at", b"")]
)
def test_a_damaged_thread_row_is_one_line(
    waiting_store: tuple[Path, str], tmp_path: Path, column: str, value: object
) -> None:
    """Values of the wrong kind, as a damaged page can leave them (SQLite keeps a blob or a
    word in any column)."""
    db, thread = copy_of(waiting_store, tmp_path)
    with sqlite3.connect(db) as connection:
        connection.execute(f"UPDATE threads SET {column} = ?", (value,))
    for args in commands(db, thread):
        assert_one_clear_line_or_success(invoke(*args))
    result = invoke("threads", "--db", str(db))
    assert result.exit_code == 1 and "damaged thread row" in result.output


def test_a_hand_edited_snapshot_is_ignored_and_the_log_replayed(
    waiting_store: tuple[Path, str], tmp_path: Path
) -> None:
    db, thread = copy_of(waiting_store, tmp_path)
    for snapshot in ["{not json", '{"reducer": 1}', '{"reducer": "x", "seq": 1, "state": 5}']:
        with sqlite3.connect(db) as connection:
            connection.execute("UPDATE threads SET snapshot = ?", (snapshot,))
        result = invoke("show", thread, "--db", str(db), "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["status"] == "waiting"


def test_an_unreadable_event_names_the_thread_and_the_event(
    waiting_store: tuple[Path, str], tmp_path: Path
) -> None:
    db, thread = copy_of(waiting_store, tmp_path)
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE events SET body = '{not json' WHERE seq = 2")
    result = invoke("show", thread, "--db", str(db))
    assert result.exit_code == 1
    # The log's hash chain catches the edit before the event is even decoded.
    assert result.output.startswith(f"error: thread {thread} does not verify: an event")
    assert "(event 2)" in result.output and "changed outside twelvefold" in result.output


# ---- a ROLLBACK that fails -------------------------------------------------------------------


class _FullDisk:
    """A connection whose writes fail as on a full disk, and whose ROLLBACK fails too
    (broken on purpose: SQLite itself cannot be made to fail a ROLLBACK on demand)."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql.startswith("ROLLBACK"):
            raise sqlite3.OperationalError("cannot rollback - no transaction is active")
        if sql.startswith("INSERT INTO events"):  # one event's row (`_insert_events`)
            raise sqlite3.OperationalError("database or disk is full")
        return self.real.execute(sql, *args)

    def executemany(self, sql: str, *args: object) -> sqlite3.Cursor:
        raise sqlite3.OperationalError("database or disk is full")

    def close(self) -> None:
        self.real.close()


def test_a_failed_rollback_does_not_hide_the_error_that_caused_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "threads.db")
    codec = Codec()
    info = ThreadInfo("th-1", "a", "a.agent", "running", "s", 1, "t", "t")
    store._db = _FullDisk(store._db)  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full") as raised:
        store.create(info, [Started(step="s", at="t", input="x")], codec)
    assert raised.value.__notes__ == [
        "ROLLBACK failed as well: cannot rollback - no transaction is active"
    ]
    store.close()


# ---- a Ctrl-C as a transaction begins --------------------------------------------------------


class _InterruptedAtBegin:
    """A connection on which a Ctrl-C lands as its first `BEGIN` returns: Python runs the
    SIGINT handler at the next instruction, so `KeyboardInterrupt` is raised with the
    transaction begun (as a real Ctrl-C did in about one run of a counter thread in
    thirty; it cannot be timed on demand)."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real, self.armed = real, True

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        cursor = self.real.execute(sql, *args)
        if self.armed and sql.startswith("BEGIN"):
            self.armed = False
            raise KeyboardInterrupt
        return cursor

    @property
    def in_transaction(self) -> bool:
        return self.real.in_transaction


@pytest.mark.parametrize("call", ["a write", "a read"])
def test_a_ctrl_c_as_a_transaction_begins_leaves_none_open(tmp_path: Path, call: str) -> None:
    """A process that catches Ctrl-C and goes on (a notebook, a service) can use its store
    again, and so can every other process: left open, the transaction kept the file's
    write lock until the process exited (others' writes failed, `database is locked`)
    and failed this store's next one (`cannot start a transaction within a transaction`)."""
    db, codec = tmp_path / "threads.db", Codec()
    store = SqliteStore(db)
    info = ThreadInfo("th-1", "a", "a.agent", "running", "s", 1, "t", "t")
    store.create(info, [Started(step="s", at="t", input="x")], codec)
    real = store._db
    store._db = _InterruptedAtBegin(real)  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        if call == "a write":
            store.acquire("th-1", "me", 60)
        else:
            store.load("th-1", codec)
    store._db = real
    assert not real.in_transaction
    other = sqlite3.connect(db, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")  # nobody holds the write lock
    other.execute("ROLLBACK")
    other.close()
    assert store.acquire("th-1", "me", 60).owner == "me"
    assert len(store.load("th-1", codec)) == 1
    store.close()


@pytest.mark.parametrize("call", ["a write", "a read"])
def test_a_ctrl_c_at_any_moment_of_a_transaction_leaves_none_open_while_it_is_handled(
    tmp_path: Path, call: str
) -> None:
    """CPython runs a SIGINT handler when a call into C returns (and at loops): here a
    `KeyboardInterrupt` is raised at each such moment of a transaction in turn, the first
    (as its `BEGIN` returns) to the last. At none may the transaction stay open while the
    caller handles the Ctrl-C: a read begun in a generator (`contextlib.contextmanager`)
    was interrupted as `next()` returned its `yield`, outside the `with`, and stayed open
    until the traceback holding the generator was let go (a notebook keeps it)."""
    db, codec = tmp_path / "threads.db", Codec()
    store = SqliteStore(db)
    info = ThreadInfo("th-1", "a", "a.agent", "running", "s", 1, "t", "t")
    store.create(info, [Started(step="s", at="t", input="x")], codec)
    real = store._db
    for moment in itertools.count(1):
        returns = 0

        def profile(frame: object, event: str, arg: object, moment: int = moment) -> None:
            nonlocal returns
            if event == "c_return" and real.in_transaction:
                returns += 1
                if returns == moment:
                    sys.setprofile(None)
                    raise KeyboardInterrupt

        sys.setprofile(profile)
        try:
            if call == "a write":
                made = ThreadInfo(f"th-{moment + 1}", "a", "a.agent", "running", "s", 1, "t", "t")
                store.create(made, [Started(step="s", at="t", input="x")], codec)
            else:
                store.load("th-1", codec)
        except KeyboardInterrupt:
            assert not real.in_transaction, f"open while handled, interrupted at {moment}"
        else:
            break  # past the last moment: the call ran to its end
        finally:
            sys.setprofile(None)
        assert not real.in_transaction
    assert moment > 2, "never interrupted inside the transaction"
    assert store.acquire("th-1", "me", 60).owner == "me"
    store.close()


# ---- run: the agent file itself ------------------------------------------------------------


def test_run_on_an_agent_file_that_is_not_text_is_its_diagnostic(tmp_path: Path) -> None:
    agent = tmp_path / "a.agent"
    agent.write_bytes(b"agent caf\xe9 { start done }\nfinal done\n")
    db = tmp_path / "threads.db"
    result = invoke("run", str(agent), "--input", "x", "--db", str(db))
    assert_one_clear_line_or_success(result)
    assert result.exit_code == 1 and "error[E007]" in result.output
    fifo = tmp_path / "b.agent"
    os.mkfifo(fifo)
    result = invoke("run", str(fifo), "--input", "x", "--db", str(db))
    assert result.exit_code == 1
    assert result.output.strip() == f"error: not a regular file: {fifo}"


# ---- a refused run leaves no store behind ------------------------------------------------

TYPED = """agent a { input Order start done }
type Order { id: int }
final done(Order)
"""


@pytest.mark.parametrize(
    ("agent", "input_text", "said"),
    [
        ("missing.agent", "x", "error: no such file"),
        ("broken.agent", "x", "does not compile"),
        ("typed.agent", "not an order", "error:"),
    ],
)
@pytest.mark.parametrize("where", ["--db", "default"])
def test_a_refused_run_leaves_no_store_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent: str, input_text: str, said: str,
    where: str,
) -> None:  # fmt: skip
    """Before: every refused `run` (no such agent, one that does not compile, an input it
    refuses) left an empty SQLite file (and its folder) that later commands took for a
    store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TWELVEFOLD_DB", raising=False)
    monkeypatch.delenv("TWELVEFOLD_STORE", raising=False)
    (tmp_path / "broken.agent").write_text("agent a { start nowhere }\n")
    (tmp_path / "typed.agent").write_text(TYPED)
    db = tmp_path / "made" / "here" / "threads.db"
    options = ["--db", str(db)] if where == "--db" else []
    before = everything(tmp_path)

    result = invoke("run", agent, "--input", input_text, *options)

    assert_one_clear_line_or_success(result)
    assert result.exit_code == 1 and said in result.output
    made = everything(tmp_path) - before
    cache = {m for m in made if m.startswith(".twelvefold/cache")}  # a compiled agent's
    assert made - cache == ({".twelvefold"} if cache else set())  # no store, no `made/`


def everything(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def test_a_refused_run_keeps_a_store_that_was_there(tmp_path: Path) -> None:
    """Only what the refused run made is removed: a store made before (even an empty file
    a person created) stays as it was."""
    db = tmp_path / "threads.db"
    (tmp_path / "typed.agent").write_text(TYPED)
    accepted = invoke("run", str(tmp_path / "typed.agent"), "--input", '{"id": 1}', "--db", str(db))
    assert accepted.exit_code == 0, accepted.output
    refused = invoke("run", str(tmp_path / "typed.agent"), "--input", "no", "--db", str(db))
    assert refused.exit_code == 1
    assert len(json.loads(invoke("threads", "--json", "--db", str(db)).stdout)) == 1
    empty = tmp_path / "empty.db"
    empty.touch()
    refused = invoke("run", str(tmp_path / "missing.agent"), "--input", "x", "--db", str(empty))
    assert refused.exit_code == 1
    assert empty.is_file()


@pytest.mark.parametrize(
    ("agent", "input_text"), [("missing.agent", "x"), ("typed.agent", "not an order")]
)
def test_a_refused_run_on_a_link_to_a_new_file_leaves_no_store_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent: str, input_text: str
) -> None:
    """Before: `--db link.db`, a link to a file not there yet, was taken for a file that
    was there before, so a refused run left the file the link names: an empty store.
    Now the file the run made is removed, and the link stays as the person made it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "typed.agent").write_text(TYPED)
    (tmp_path / "stores").mkdir()
    link = tmp_path / "link.db"
    link.symlink_to(Path("stores") / "threads.db")
    before = everything(tmp_path)

    refused = invoke("run", agent, "--input", input_text, "--db", "link.db")

    assert_one_clear_line_or_success(refused)
    assert refused.exit_code == 1
    made = everything(tmp_path) - before
    assert {m for m in made if not m.startswith(".twelvefold")} == set(), made
    assert link.is_symlink() and not link.exists()
    accepted = invoke("run", "typed.agent", "--input", '{"id": 1}', "--db", "link.db")
    assert accepted.exit_code == 0, accepted.output
    assert len(SqliteStore(tmp_path / "stores" / "threads.db", create=False).threads()) == 1


def test_a_refused_run_keeps_new_folders_it_did_not_make(tmp_path: Path) -> None:
    """Before: the folders missing when the command started were removed on a refusal
    (when empty) whoever made them: a command started at once on `new/dir/other.db`, which
    made them and was about to create its file there, found them gone and failed."""
    db = tmp_path / "new" / "dir" / "threads.db"
    with pytest.raises(KeyboardInterrupt), removed_if_refused(db):
        (tmp_path / "new" / "dir").mkdir(parents=True)  # another command's
        raise KeyboardInterrupt  # refused before it opened its store
    assert (tmp_path / "new" / "dir").is_dir()


def test_a_refused_run_keeps_a_folder_made_again_by_another(tmp_path: Path) -> None:
    """The folders this command made are removed only while they are the same folders:
    one removed meanwhile and made again, by another command about to create its file
    there, is the other's."""
    db = tmp_path / "new" / "dir" / "threads.db"
    with pytest.raises(KeyboardInterrupt), removed_if_refused(db):
        SqliteStore(db).close()  # this command's: new/, new/dir/ and the file
        shutil.rmtree(tmp_path / "new")  # a person removes it all...
        (tmp_path / "new" / "dir").mkdir(parents=True)  # ...and another command makes it
        raise KeyboardInterrupt
    assert (tmp_path / "new" / "dir").is_dir()


def test_a_new_store_whose_folder_is_removed_before_its_file_is_made_makes_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window a refused command's cleanup leaves: it made `new/dir/` for its store;
    another command found it there (nothing to make) and, before it created its file,
    the refused command removed the folders, still empty. Before, the other's SQLite then
    failed (`unable to open database file`); now the store makes the folders again."""
    folder = tmp_path / "new" / "dir"
    folder.mkdir(parents=True)  # the refused command's
    real_mkdir = os.mkdir
    removed: list[Path] = []

    def found_then_removed(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path) == folder and not removed:  # there: nothing to make; then removed
            folder.rmdir()  # (the refused command's cleanup, at the worst moment)
            folder.parent.rmdir()
            removed.append(folder)
            return
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", found_then_removed)
    store = SqliteStore(folder / "threads.db")
    store.close()
    assert removed == [folder]
    assert SqliteStore(folder / "threads.db", create=False).threads() == []


def test_a_store_that_got_a_thread_is_kept_however_the_command_ends(tmp_path: Path) -> None:
    """Ctrl-C after the thread was stored: the store this run made is its thread's."""
    (tmp_path / "typed.agent").write_text(TYPED)
    db = tmp_path / "new" / "threads.db"
    with pytest.raises(KeyboardInterrupt), removed_if_refused(db):
        store = SqliteStore(db)
        with Runtime(store) as rt:
            rt.launch(str(tmp_path / "typed.agent"), '{"id": 1}')
        store.close()
        raise KeyboardInterrupt
    assert len(SqliteStore(db, create=False).threads()) == 1


def test_a_refused_run_keeps_the_new_store_another_process_has_open(tmp_path: Path) -> None:
    """Two commands started at once on one new --db path: the one refused does not remove
    the file the other opened meanwhile and has yet to store its thread in (removed, that
    thread went into a file no path names, and was lost)."""
    import contextvars

    from twelvefold.runtime.newstore import make_store_file

    (tmp_path / "typed.agent").write_text(TYPED)
    db = tmp_path / "new" / "threads.db"
    with pytest.raises(KeyboardInterrupt), removed_if_refused(db):
        make_store_file(db)  # this command's new file
        # The other command's, open before this one is refused: another process in life,
        # here a context of its own (this command's connections it closes before looking).
        other = contextvars.Context().run(SqliteStore, db)
        raise KeyboardInterrupt
    with Runtime(other) as rt:
        thread = rt.launch(str(tmp_path / "typed.agent"), '{"id": 1}')
    other.close()
    assert [t.id for t in SqliteStore(db, create=False).threads()] == [thread.id]


def test_a_refused_start_keeps_a_new_store_another_command_wrote_into(tmp_path: Path) -> None:
    """`twelvefold serve --db new.db & twelvefold token create alice --db new.db`: the token
    was stored (and shown once) in the file the start made, whose refusal then removed it
    with the token, as it judged a store unused by its threads alone; the token printed
    was then unknown to the next start."""
    db = tmp_path / "new" / "threads.db"
    with pytest.raises(KeyboardInterrupt), removed_if_refused(db):
        SqliteStore(db).close()  # this command's store, made and closed before the refusal
        made = invoke("token", "create", "alice", "--db", str(db))  # another command's
        assert made.exit_code == 0, made.output
        raise KeyboardInterrupt
    listed = invoke("token", "list", "--json", "--db", str(db))
    assert listed.exit_code == 0, listed.output
    assert [t["person"] for t in json.loads(listed.stdout)] == ["alice"]


@pytest.mark.parametrize("build", ["as built", "broken: no look after opening"])
def test_a_store_file_removed_as_it_is_opened_is_opened_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build: str
) -> None:
    """Two commands start at once on one new `--db` and one is refused: its cleanup may
    remove the new file (it looks alone: no other connection has reached WAL mode yet)
    just after the other command's store opened it. SQLite then refuses that store's
    writes (`disk I/O error`): the good command failed. The store looks again when it
    cannot set the file up, and once its connection holds it (in WAL mode), and opens it
    anew if it is not the file at its path any more. The broken build does not look."""
    import twelvefold.runtime.store as store_module

    db = tmp_path / "new" / "threads.db"
    connect, removed = sqlite3.connect, []

    def connect_then_removed(*args: Any, **kwargs: Any) -> Any:
        connection = connect(*args, **kwargs)
        if not removed:  # the refused command's cleanup, between the open and WAL mode
            removed.append(db)
            db.unlink()
        return connection

    if build != "as built":
        monkeypatch.setattr(store_module, "_same_file", lambda before, path: True)
    monkeypatch.setattr(sqlite3, "connect", connect_then_removed)
    info = ThreadInfo("th-1", "a", "a.agent", "running", "s", 1, "t", "t")
    if build != "as built":
        with pytest.raises(StoreError, match="disk I/O error"):
            SqliteStore(db)
        return
    store = SqliteStore(db)
    store.create(info, [Started(step="s", at="t", input="x")], Codec())
    store.close()
    monkeypatch.setattr(sqlite3, "connect", connect)
    assert removed == [db]
    assert [t.id for t in SqliteStore(db, create=False).threads()] == ["th-1"]


def test_a_store_file_removed_every_time_it_is_opened_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "threads.db"
    connect = sqlite3.connect

    def connect_then_removed(*args: Any, **kwargs: Any) -> Any:
        connection = connect(*args, **kwargs)
        db.unlink()
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect_then_removed)
    with pytest.raises(StoreError, match="removed or replaced each of the 5 times"):
        SqliteStore(db)


def test_a_run_refused_over_a_runtime_setting_leaves_no_store_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before (found by a red team): the runtime refusing its settings left the store it
    had opened open, so the cleanup took the new file for another command's, and kept it."""
    monkeypatch.setenv("TWELVEFOLD_LEASE_SECONDS", "abc")
    (tmp_path / "typed.agent").write_text(TYPED)
    db = tmp_path / "made" / "threads.db"
    result = invoke("run", str(tmp_path / "typed.agent"), "--input", '{"id": 1}', "--db", str(db))
    assert result.exit_code == 1 and "TWELVEFOLD_LEASE_SECONDS" in result.output
    assert not (tmp_path / "made").exists()


def test_a_db_path_the_system_refuses_is_one_short_line(tmp_path: Path) -> None:
    """Before (found by a red team): `error: NotADirectoryError: [Errno 20] Not a
    directory: '…'`, and a path too long for the file system printed whole (4,000
    characters)."""
    (tmp_path / "afile").write_text("")
    agent = str(EXAMPLES / "deploybot.agent")
    under_a_file = invoke("run", agent, "--input", "x", "--db", str(tmp_path / "afile" / "x.db"))
    assert under_a_file.exit_code == 1
    assert under_a_file.stderr == f"error: cannot use {tmp_path / 'afile'}: Not a directory\n"
    long = invoke("run", agent, "--input", "x", "--db", str(tmp_path / ("a" * 4000) / "x.db"))
    assert long.exit_code == 1 and "File name too long" in long.stderr
    assert len(long.stderr) < 300 and "Errno" not in long.stderr


@pytest.mark.parametrize("command", ["run", "token"])
def test_a_db_path_with_a_line_break_cannot_forge_an_error_line(
    tmp_path: Path, command: str
) -> None:
    """Found by a red team: `cannot use PATH` and `PATH is not a store SQLite can open`
    printed the path's line breaks, so a path could add an `error:` line of its own."""
    (tmp_path / "afile\nerror: forged\n").write_text("")  # named as the file in the way
    db = str(tmp_path / "afile\nerror: forged\n" / "x" / "x.db")
    if command == "run":
        result = invoke("run", str(EXAMPLES / "deploybot.agent"), "--input", "x", "--db", db)
    else:
        result = invoke("token", "create", "bob", "--db", db, "--create")
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1 and "\\nerror: forged\\n" in result.stderr
