"""A real PostgreSQL for the tests: one throwaway cluster per test session, a fresh
database per test.

`postgres_cluster` (session) runs Debian's PostgreSQL (`initdb` from
/usr/lib/postgresql/*/bin, the newest, or one on PATH) in a temporary folder on a free
port of 127.0.0.1, as a non-root user when the tests run as root (PostgreSQL refuses to
run as root; the user `twelvefold-pg` is created with `useradd` if missing), with
`fsync=off` (a test never survives a power cut; the server crash tests kill clients, not
the database). It is stopped and removed at the end of the session.

`postgres_url` is a new, empty database in that cluster for one test
(`CREATE DATABASE ... TEMPLATE template0`: a copy, not a schema build), as a
`postgresql://postgres@127.0.0.1:PORT/NAME` URL. Tests that use it are marked `postgres`
(tests/conftest.py). Without PostgreSQL they skip, saying how to install it, except under
CI=true, where they fail: a real part is never silently left out (`make system-deps`
installs it).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "twelvefold-pg"
"""Who runs the cluster when the tests run as root."""


@dataclass(frozen=True)
class Cluster:
    bin: Path
    port: int
    folder: Path

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def find_initdb() -> Path | None:
    """The newest Debian PostgreSQL's initdb, else one on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1])
    on_path = shutil.which("initdb")
    return Path(on_path) if on_path else None


def _missing(why: str) -> None:
    message = f"PostgreSQL is not available ({why}); `make system-deps` installs it"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _run_as() -> str | None:
    """The user to run PostgreSQL as: None when not root, else USER (created if missing)."""
    if os.geteuid() != 0:
        return None
    # pytest-xdist's workers start at once, so another may be making the user: useradd
    # then fails (the user exists, or /etc/passwd is locked for a moment), so look again.
    for _ in range(20):
        try:
            pwd.getpwnam(USER)
            return USER
        except KeyError:
            made = subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 USER],
                check=False, capture_output=True, text=True,
            )  # fmt: skip
            if made.returncode != 0:
                time.sleep(0.1)
    pytest.fail(f"useradd {USER} failed: {made.stderr.strip()}", pytrace=False)
    raise AssertionError  # unreachable


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_cluster(folder: Path, *, fsync: bool = False) -> Cluster:
    """initdb and start a cluster in `folder` (an empty folder whose parents the cluster's
    user can reach: a `mkdtemp` of its own); `_missing` if there is no PostgreSQL. Used
    by the fixture and by the benchmarks (with `fsync`). It is given to that user."""
    initdb = find_initdb()
    if initdb is None:
        _missing("no initdb under /usr/lib/postgresql/*/bin or on PATH")
    assert initdb is not None
    user = _run_as()
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir(parents=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (folder, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    run = {"user": user, "capture_output": True, "text": True, "check": False}
    made = subprocess.run(
        [str(initdb), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
         "--encoding=UTF8", "--locale=C"],
        **run,  # type: ignore[call-overload]
    )  # fmt: skip
    if made.returncode != 0:
        pytest.fail(f"initdb failed: {made.stderr.strip()}", pytrace=False)
    options = f"-c listen_addresses=127.0.0.1 -k {sockets} -c max_connections=200"
    if not fsync:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    for _ in range(5):  # another process may take the free port before the server does
        port = _free_port()
        started = subprocess.run(
            [str(initdb.parent / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"),
             "-o", f"-p {port} {options}", "-w", "-t", "60", "start"],
            **run,  # type: ignore[call-overload]
        )  # fmt: skip
        if started.returncode == 0:
            return Cluster(initdb.parent, port, folder)
    log = (folder / "log").read_text(errors="replace")[-2000:]
    pytest.fail(f"PostgreSQL did not start: {started.stderr.strip()}\n{log}", pytrace=False)
    raise AssertionError  # unreachable


def stop_cluster(cluster: Cluster) -> None:
    subprocess.run(
        [str(cluster.bin / "pg_ctl"), "-D", str(cluster.folder / "data"), "-m", "immediate",
         "-w", "stop"],
        user=_run_as(),
        capture_output=True,
        check=False,
    )  # fmt: skip
    shutil.rmtree(cluster.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    folder = Path(tempfile.mkdtemp(prefix="twelvefold-pg-"))
    try:
        cluster = start_cluster(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> Iterator[str]:
    """A fresh, empty database's URL, dropped after the test."""
    url = postgres_cluster.create_database()
    try:
        yield url
    finally:
        postgres_cluster.drop_database(url)
