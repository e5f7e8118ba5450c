"""A `--db` that names no twelvefold store is left as it is.

Found by a red team: `token create carol --db other.db`, where other.db was another
application's SQLite database, wrote twelvefold's twelve tables into it, and so did the
read-only `threads`; `threads --db zero.db` on an empty file turned it into a store. Another
application's database (tables, none of twelvefold's) is now refused by every command in one
line, its bytes untouched; a command that only reads leaves an empty file empty, while the
commands that make a store (`run`, `serve`, `token create --create`) still make it there.
Each case runs the real CLI in a subprocess.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from tests.support.cli import twelvefold

ROOT = Path(__file__).resolve().parents[1]


def foreign_database(path: Path) -> str:
    """Another application's SQLite file at `path`; the SHA-256 of its bytes."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    db.execute("INSERT INTO customers (name) VALUES ('ana')")
    db.commit()
    db.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


COMMANDS = [
    ("threads",),
    ("show", "abc"),
    ("stats",),
    ("token", "list"),
    ("token", "revoke", "abc"),
    ("token", "create", "carol"),
    ("expire",),
    ("prune", "--older-than", "1d", "--delete"),
]


@pytest.mark.parametrize(
    "command",
    [
        *COMMANDS,
        ("token", "create", "carol", "--create"),
        (
            "run",
            str(ROOT / "examples" / "deploybot.agent"),
            "--input",
            "deploy v1",
            "--cassette",
            str(ROOT / "examples" / "cassettes" / "deploybot.jsonl"),
        ),
        ("db", "upgrade"),
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_another_applications_database_is_refused_and_left_as_it_was(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    other = tmp_path / "other.db"
    before = foreign_database(other)
    done = twelvefold(*command, "--db", str(other), cwd=tmp_path)
    assert done.returncode == 1, done
    assert done.stderr == (
        f"error: {other} is an SQLite database of another application (tables: customers, "
        "orders): give --db a twelvefold store\n"
    ), done.stderr
    assert hashlib.sha256(other.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: " ".join(command[:2]))
def test_a_command_that_does_not_make_a_store_leaves_an_empty_file_empty(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    empty = tmp_path / "zero.db"
    empty.write_bytes(b"")
    done = twelvefold(*command, "--db", str(empty), cwd=tmp_path)
    assert done.returncode == 1, done
    (said,) = done.stderr.splitlines()
    assert said.startswith(f"error: {empty} is an empty file, not a "), said
    assert "--create" in said if command[0] == "token" else "`twelvefold run`" in said
    assert empty.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zero.db"]


def test_token_create_with_create_makes_the_store_in_an_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "zero.db"
    empty.write_bytes(b"")
    made = twelvefold("token", "create", "carol", "--db", str(empty), "--create", cwd=tmp_path)
    assert made.returncode == 0, made
    listed = twelvefold("token", "list", "--db", str(empty), cwd=tmp_path)
    assert listed.returncode == 0 and "carol" in listed.stdout, listed
    assert twelvefold("threads", "--db", str(empty), cwd=tmp_path).returncode == 0


def test_serve_refuses_another_applications_database_at_start(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    before = foreign_database(other)
    done = twelvefold(
        "serve",
        str(ROOT / "examples" / "deploybot.agent"),
        "--insecure-local",
        "--port",
        "0",
        "--db",
        str(other),
        cwd=tmp_path,
    )
    assert done.returncode == 1, done
    assert "is an SQLite database of another application (tables: customers, orders)" in (
        done.stderr
    ), done.stderr
    assert "Traceback" not in done.stderr
    assert hashlib.sha256(other.read_bytes()).hexdigest() == before


# Found by a later red team: a file whose tables only share twelvefold's names (`threads`,
# `events`), or whose `user_version` another application set, was taken for an old store:
# switched to WAL mode (its header rewritten) and then failed on SQLite's own
# `no such column`. The shape of twelvefold's first tables decides now.
LOOK_ALIKES = {
    "tables named threads and events": (
        "CREATE TABLE threads (x)",
        "CREATE TABLE events (y)",
    ),
    "a user_version of its own": (
        "CREATE TABLE customers (id INTEGER PRIMARY KEY)",
        "PRAGMA user_version = 7",
    ),
    # rt22: views carrying twelvefold's columns (`PRAGMA table_info` answers for views too)
    "views named threads and events": (
        "CREATE TABLE t (num, id, agent, origin, status, step, seq, created_at, updated_at)",
        "CREATE VIEW threads AS SELECT * FROM t",
        "CREATE TABLE e (thread, seq, body)",
        "CREATE VIEW events AS SELECT * FROM e",
    ),
    "threads with some of twelvefold's columns": (
        "CREATE TABLE threads (num INTEGER PRIMARY KEY, id TEXT, agent TEXT)",
        "CREATE TABLE events (thread INTEGER, seq INTEGER, body TEXT)",
        "PRAGMA user_version = 2",
    ),
}


@pytest.mark.parametrize("command", [("threads",), ("db", "upgrade")], ids=" ".join)
@pytest.mark.parametrize("statements", LOOK_ALIKES.values(), ids=LOOK_ALIKES.keys())
def test_a_database_that_only_looks_like_a_store_is_refused_and_left_as_it_was(
    tmp_path: Path, statements: tuple[str, ...], command: tuple[str, ...]
) -> None:
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()
    before = hashlib.sha256(other.read_bytes()).hexdigest()
    done = twelvefold(*command, "--db", str(other), cwd=tmp_path)
    assert done.returncode == 1, done
    assert done.stderr.startswith(
        f"error: {other} is an SQLite database of another application (tables: "
    ), done.stderr
    assert hashlib.sha256(other.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]
