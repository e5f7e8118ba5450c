"""A `SqliteStore` whose file (or its -wal) is removed or replaced while it is open never
acknowledges a write that went to a file nobody else can find (rt18): the write is
refused with `StoreMoved` before it commits, and the store goes on with the thread store
the path names again. The server's side is tests/test_store_replaced_under_server.py."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from twelvefold.runtime.store import SqliteStore, StoreError, StoreMoved

A, B, C = "a" * 64, "b" * 64, "c" * 64


def digests_in(db: Path) -> set[str]:
    """The agent versions in the file at `db`, as another process reads it."""
    with sqlite3.connect(db) as connection:
        return {row[0] for row in connection.execute("SELECT digest FROM agent_versions")}


def test_appends_whose_file_is_replaced_before_they_commit_go_to_the_file_there_now(
    tmp_path: Path,
) -> None:
    """A group of appends (`commits.submit`: what `create` and `append` submit) whose file
    is replaced as it runs is rolled back before its COMMIT and made once more, on the
    file the path names now: what is acknowledged is in the file every process reads."""
    db = tmp_path / "threads.db"
    store = SqliteStore(db)
    store.save_version(A, "one")
    with sqlite3.connect(db) as source, sqlite3.connect(tmp_path / "backup.db") as target:
        source.backup(target)
    runs = []

    def replaced_meanwhile() -> None:
        store._db.execute(
            "INSERT INTO agent_versions (digest, body, created_at) VALUES (?, 'two', 'now')",
            (B,),
        )
        if not runs:  # an operator restores the backup as the first try runs
            for name in ("threads.db", "threads.db-wal", "threads.db-shm"):
                (tmp_path / name).unlink()
            shutil.copy(tmp_path / "backup.db", db)
        runs.append(1)

    store.commits.submit(replaced_meanwhile)
    assert len(runs) == 2
    assert digests_in(db) == {A, B}
    store.save_version(C, "three")
    assert digests_in(db) == {A, B, C}
    store.close()


def test_a_save_whose_file_is_replaced_before_it_commits_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "threads.db"
    store = SqliteStore(db)
    store.save_version(A, "one")
    store.close()
    shutil.copy(db, tmp_path / "backup.db")
    store = SqliteStore(db)
    original = store._still_there

    def restored_first() -> None:  # the backup is put back between the INSERT and COMMIT
        for name in ("threads.db", "threads.db-wal", "threads.db-shm"):
            (tmp_path / name).unlink()
        shutil.copy(tmp_path / "backup.db", db)
        store._still_there = original
        original()

    store._still_there = restored_first  # type: ignore[method-assign]
    with pytest.raises(StoreMoved, match="was replaced by another file") as refused:
        store.save_version(B, "two")
    assert isinstance(refused.value, StoreError)  # the server's 503
    store.save_version(C, "three")
    assert store.load_version(B) is None
    assert digests_in(db) == {A, C}
    store.close()


def test_a_removed_wal_refuses_the_write_it_would_lose_and_keeps_what_was_committed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "threads.db"
    store = SqliteStore(db)
    store.save_version(A, "one")  # in the -wal only, until a checkpoint
    (tmp_path / "threads.db-wal").unlink()

    with pytest.raises(StoreMoved, match="write-ahead log"):
        store.save_version(B, "two")
    store.save_version(C, "three")
    assert digests_in(db) == {A, C}
    store.close()
    assert digests_in(db) == {A, C}


def test_a_store_removed_refuses_writes_until_a_thread_store_is_back(tmp_path: Path) -> None:
    db = tmp_path / "threads.db"
    store = SqliteStore(db)
    store.save_version(A, "one")
    store.close()
    shutil.copy(db, tmp_path / "backup.db")
    store = SqliteStore(db)
    db.unlink()
    for name in ("threads.db-wal", "threads.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)

    with pytest.raises(StoreMoved, match="was removed"):
        store.save_version(B, "two")
    assert not db.exists()  # no new, empty store made in its place
    db.write_bytes(b"")  # a file being copied in: not a thread store yet
    with pytest.raises(StoreMoved, match="empty file"):
        store.save_version(B, "two")
    shutil.copy(tmp_path / "backup.db", db)
    store.save_version(C, "three")
    assert digests_in(db) == {A, C}
    store.close()


def test_a_backup_moved_over_the_store_is_not_opened_with_the_old_files_wal(
    tmp_path: Path,
) -> None:
    """`mv backup.db threads.db` leaves the old file's -wal at the path, which SQLite
    would read as the backup's own: its pages over the backup's."""
    db = tmp_path / "threads.db"
    store = SqliteStore(db)
    store.save_version(A, "one")
    with sqlite3.connect(db) as source, sqlite3.connect(tmp_path / "backup.db") as target:
        source.backup(target)
    store.save_version(B, "two")  # in the -wal only
    (tmp_path / "backup.db").replace(db)

    with pytest.raises(StoreMoved, match=r"threads\.db-wal") as refused:
        store.save_version(C, "three")
    assert "Remove" in str(refused.value)
    for name in ("threads.db-wal", "threads.db-shm"):
        (tmp_path / name).unlink()
    store.save_version(C, "three")
    assert store.load_version(B) is None
    assert digests_in(db) == {A, C}
    store.close()
