"""The SQLite store removed or replaced under a running `twelvefold serve` (an operator
restoring a backup: `rm threads.db*; cp backup.db threads.db`, or a folder put in its
place). Found by a red team (rt18): the server kept its connection to the removed file
and went on writing to it, so launches were acknowledged (`waiting`) and listed by the
server, but the file every other process reads (the CLI, a restart) never held them; and
after the repair the server never used the repaired file.

Now a write whose file is no longer at the path is refused before it commits (a 503 that
names no absolute path, a log line saying what happened), and once a thread store is back
at the path the server opens it and serves it, without a restart.

A real `twelvefold serve` on loopback, a real SQLite file, real HTTP."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.runtime_helpers import EXAMPLES
from tests.support.waiting import wait_for

CASSETTE = EXAMPLES / "cassettes" / "deploybot.jsonl"
PROBLEM = "application/problem+json"


class Server:
    """`twelvefold serve deploybot.agent --db DB --insecure-local --port 0` (the scripted
    model of its cassette), its stderr kept in a file."""

    def __init__(self, folder: Path, db: Path) -> None:
        self.log = folder / "serve.err"
        self.db = db
        args = [
            "serve", str(EXAMPLES / "deploybot.agent"), "--db", str(db), "--insecure-local",
            "--port", "0", "--grace", "1", "--cassette", str(CASSETTE),
        ]  # fmt: skip
        with self.log.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "twelvefold", *args],
                cwd=folder, stdout=subprocess.DEVNULL, stderr=err,
                env={**os.environ, "TWELVEFOLD_DB": "", "TWELVEFOLD_STORE": ""},
            )  # fmt: skip
        wait_for(lambda: self.url is not None or self.process.poll() is not None, "serve")
        assert self.url is not None, self.said()
        self.http = httpx.Client(base_url=self.url, headers={"Host": "localhost"}, timeout=60)

    @property
    def url(self) -> str | None:
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.said())
        return found[1] if found else None

    def said(self) -> str:
        return self.log.read_text(errors="replace")

    def launch(self) -> httpx.Response:
        return self.http.post(
            "/v1/agents/deploybot/threads?wait=true",
            json={"input": "deploy v1.2.3 to production"},
        )

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path, tmp_path / "store" / "threads.db")
    try:
        yield running
    finally:
        running.stop()


def launched(response: httpx.Response) -> str:
    """The id of a thread the server acknowledged (it waits for approval)."""
    assert response.status_code in (200, 201, 202), response.text
    view = response.json()
    assert view["status"] == "waiting", view
    return str(view["thread_id"])


def assert_unavailable(response: httpx.Response, root: Path, *words: str) -> dict[str, Any]:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert str(root) not in body["detail"] and "/tmp" not in body["detail"], body
    assert "Traceback" not in response.text
    for word in words:
        assert word in body["detail"], body
    return body


def ids_in(db: Path) -> set[str]:
    """The threads in the file at `db`, as any other process reads it."""
    with sqlite3.connect(db) as connection:
        return {row[0] for row in connection.execute("SELECT id FROM threads")}


def launchers_in(db: Path) -> set[str]:
    with sqlite3.connect(db) as connection:
        return {row[0] for row in connection.execute("SELECT thread_id FROM server_launches")}


def back_up(db: Path, backup: Path) -> None:
    """A consistent copy of the store while the server has it open (SQLite's backup)."""
    with sqlite3.connect(db) as source, sqlite3.connect(backup) as target:
        source.backup(target)
    sqlite3.connect(backup).close()


def remove_store(db: Path) -> None:
    for name in (db.name, db.name + "-wal", db.name + "-shm"):
        (db.parent / name).unlink(missing_ok=True)


def listed(server: Server) -> set[str]:
    response = server.http.get("/v1/threads")
    assert response.status_code == 200, response.text
    return {row["thread_id"] for row in response.json()}


def test_launches_after_the_store_is_removed_are_refused_and_nothing_acknowledged_is_lost(
    server: Server, tmp_path: Path
) -> None:
    first = launched(server.launch())
    assert ids_in(server.db) == {first}
    remove_store(server.db)

    refused = assert_unavailable(server.launch(), tmp_path, "threads.db", "was removed")
    assert "nothing was written" in refused["detail"]
    assert "was removed" in server.said() and "twelvefold.store" in server.said()
    # The listing is refused too once the server looks (reads look at most every second).
    wait_for(lambda: server.http.get("/v1/threads").status_code == 503, "the list refused")
    assert not server.db.exists()  # no new empty store made in its place
    server.stop()
    assert not server.db.exists()


def test_a_backup_restored_under_the_server_is_served_without_a_restart(
    server: Server, tmp_path: Path
) -> None:
    first = launched(server.launch())
    back_up(server.db, tmp_path / "backup.db")
    after_backup = launched(server.launch())

    remove_store(server.db)  # as an operator restores a backup
    shutil.copy(tmp_path / "backup.db", server.db)

    restored = launched(server.launch())
    # Served from the restored file: what was launched after the backup is gone (the
    # operator's choice), what is launched now is in the file every process reads.
    assert ids_in(server.db) == {first, restored}
    assert "opened the thread store now there" in server.said()
    assert listed(server) == {first, restored}
    assert server.http.get(f"/v1/threads/{after_backup}").status_code == 404
    view = server.http.get(f"/v1/threads/{first}")
    assert view.status_code == 200 and view.json()["status"] == "waiting", view.text
    assert restored in launchers_in(server.db)  # the server's own tables follow it too

    server.stop()
    assert ids_in(server.db) == {first, restored}
    cli = subprocess.run(
        [sys.executable, "-m", "twelvefold", "threads", "--db", str(server.db), "--json"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert {row["thread_id"] for row in json.loads(cli.stdout)} == {first, restored}


def test_a_store_replaced_by_a_folder_refuses_launches(server: Server, tmp_path: Path) -> None:
    launched(server.launch())
    remove_store(server.db)
    server.db.mkdir()

    assert_unavailable(server.launch(), tmp_path, "threads.db", "a folder")
    assert "replaced by a folder" in server.said()
    assert list(server.db.iterdir()) == []
