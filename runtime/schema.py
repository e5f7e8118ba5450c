"""The thread store's schema, in numbered migrations, for SQLite and PostgreSQL alike.

Everything twelvefold stores lives in one database: the threads and their events (this
package) and the server's own tables (tokens, inbox sessions, launches, forks, reply
targets, schedule runs, Slack messages: twelvefold/server/). Each migration brings the
schema from version N-1 to N; `twelvefold_schema` holds one row per applied migration
(version, name, when), so a database says exactly which it has been through.

What happens when a database's schema is older than the code (docs/stores.md):

- a SQLite file is upgraded when it is opened, in one `BEGIN IMMEDIATE` transaction (an
  embedded store belongs to the processes on its machine, which all run this code);
- a PostgreSQL database with no twelvefold tables yet is set up when first opened; one
  with an older schema is refused (`SchemaBehind`, naming `twelvefold db upgrade`): a shared
  database is upgraded on purpose, as a step of a deploy, not by whichever process starts
  first. The upgrade runs in one transaction under an advisory lock, so concurrent upgrades
  wait for each other and the second finds nothing left to do;
- a schema newer than the code (a newer twelvefold upgraded it) is refused either way.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .integrity import EVENT_FORMAT, Chain
from .terminal import one_line

if TYPE_CHECKING:  # sqlite3 loads when a SQLite store is opened (runtime/store.py)
    import sqlite3


class SchemaError(Exception):
    """The database's schema is not the one this code reads. One line for a person."""


def store_option(where: str) -> tuple[str, str]:
    """`--store URL` for a person to paste into a command, from `where` (a store URL as
    it is shown, its password starred): the URL without the password, which a starred one
    would be taken for; and a note on where the password goes then ("" without one)."""
    url = re.sub(r"(://[^\s@]*?):\*\*\*@", r"\1@", where)
    url = re.sub(r"(?i)(?<=[?&])password=\*\*\*(&|$)", "", url).rstrip("?&")
    note = "" if url == where else " (its password in PGPASSWORD or ~/.pgpass, or in the URL)"
    return f"--store {url}", note


class SchemaBehind(SchemaError):
    """A PostgreSQL database whose schema is older than the code: `twelvefold db upgrade`."""

    def __init__(self, where: str, found: int) -> None:
        option, note = store_option(where)
        super().__init__(
            f"the store at {one_line(where)} has schema version {found}; this twelvefold "
            f"needs {CURRENT}: run `twelvefold db upgrade {one_line(option)}`{note} once (it "
            "is safe while other processes use the store), then start this again"
        )
        self.found = found


class SchemaAhead(SchemaError):
    def __init__(self, where: str, found: int) -> None:
        super().__init__(
            f"the store at {one_line(where)} has schema version {found}, newer than this "
            f"twelvefold reads ({CURRENT}): a newer twelvefold upgraded it; upgrade twelvefold"
        )
        self.found = found


class ForeignDatabase(SchemaError):
    """A SQLite file with tables, none of them twelvefold's, or a PostgreSQL database
    without twelvefold's schema holding tables of its names: another application's
    database, which twelvefold must not write its schema into."""

    def __init__(self, where: str, tables: list[str], *, postgresql: bool = False) -> None:
        shown = one_line(", ".join(tables[:5]) + (", …" if len(tables) > 5 else ""))
        if postgresql:
            said = (
                f"the database at {one_line(where)} has no twelvefold store but tables of "
                f"another application named like twelvefold's ({shown}): give --store a "
                "database of its own"
            )
        else:
            said = (
                f"{one_line(where)} is an SQLite database of another application (tables: "
                f"{shown}): give --db a twelvefold store"
            )
        super().__init__(said)
        self.tables = tables


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What `twelvefold db upgrade` did to one store."""

    where: str
    """The store, as it may be shown (no password)."""
    before: int
    """The schema version it had (0: none yet)."""
    applied: list[Migration]


SqliteStep = Callable[["sqlite3.Connection", Chain], None]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sqlite: str | SqliteStep
    """SQL (a script), or a function given the connection and the store's chain."""
    postgresql: str
    """SQL run in the upgrade's transaction ("" when there is nothing to do)."""


# ---- 1: threads and events ------------------------------------------------------------

_SQLITE_THREADS = """
CREATE TABLE IF NOT EXISTS threads (
    num        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    agent      TEXT NOT NULL,
    origin     TEXT NOT NULL,
    status     TEXT NOT NULL,
    step       TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    snapshot   TEXT, -- JSON of a Snapshot of the state after the last append, or NULL
    request    TEXT  -- the pending request's id while waiting, else NULL
);
-- One row per event (`thread` is threads.num, so a long thread id is not repeated).
CREATE TABLE IF NOT EXISTS events (
    thread INTEGER NOT NULL,
    seq    INTEGER NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (thread, seq)
) WITHOUT ROWID;
"""

# PostgreSQL starts at the layout SQLite reached with migration 2 (no PostgreSQL store
# predates it). `body` is text, not jsonb: the chain hashes the bytes as written, and jsonb
# would reorder keys. `twelvefold_jsonb` reads a body as JSON for reports, NULL when it is
# not JSON (an edited row must not fail a listing).
_PG_THREADS = """
CREATE TABLE threads (
    num           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            text NOT NULL UNIQUE,
    agent         text NOT NULL,
    origin        text NOT NULL,
    status        text NOT NULL,
    step          text NOT NULL,
    seq           integer NOT NULL,
    created_at    text NOT NULL,
    updated_at    text NOT NULL,
    snapshot      text,
    request       text,
    snapshot_seal bytea,
    format        integer,
    reducer       text,
    head_seal     bytea,
    lease_owner   text,
    lease_token   bigint NOT NULL DEFAULT 0,
    lease_until   double precision
);
CREATE INDEX threads_by_update ON threads (updated_at DESC);
CREATE TABLE events (
    thread bigint NOT NULL,
    seq    integer NOT NULL,
    body   text NOT NULL,
    hash   bytea,
    PRIMARY KEY (thread, seq)
);
CREATE FUNCTION twelvefold_jsonb(body text) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN body::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
"""

# ---- 2: the hash chain and leases (SQLite files written before them) -----------------

_ADDED_COLUMNS = (
    ("threads", "snapshot", "TEXT"),
    ("threads", "request", "TEXT"),  # the pending request's id while waiting, else NULL
    ("threads", "snapshot_seal", "BLOB"),  # Chain.seal over the thread id and the snapshot
    ("threads", "format", "INTEGER"),  # EVENT_FORMAT of the log
    ("threads", "reducer", "TEXT"),  # fingerprint of the reducer that last appended
    ("threads", "head_seal", "BLOB"),  # Chain.seal over id, seq, chain head, format, reducer
    ("threads", "lease_owner", "TEXT"),  # NULL: nobody holds the thread
    ("threads", "lease_token", "INTEGER NOT NULL DEFAULT 0"),  # the fencing token
    ("threads", "lease_until", "REAL"),  # unix seconds on SQLite's clock
    ("events", "hash", "BLOB"),  # hash_n = SHA-256(hash_{n-1} || body_n)
)


def _chain_sqlite(db: sqlite3.Connection, chain: Chain) -> None:
    """The columns added since the first release, every stored event chained under
    `chain`, and old snapshots dropped (they carry no seal: the next load replays)."""
    for table, column, kind in _ADDED_COLUMNS:
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    for num, thread_id in db.execute("SELECT num, id FROM threads").fetchall():
        rows = db.execute(
            "SELECT seq, body FROM events WHERE thread = ? ORDER BY seq", (num,)
        ).fetchall()
        hashes = chain.links(chain.genesis(thread_id), [b for _, b in rows])
        db.executemany(
            "UPDATE events SET hash = ? WHERE thread = ? AND seq = ?",
            [(h, num, seq) for (seq, _), h in zip(rows, hashes, strict=True)],
        )
        head = hashes[-1] if hashes else chain.genesis(thread_id)
        db.execute(
            "UPDATE threads SET seq = ?, format = ?, head_seal = ?, snapshot = NULL WHERE num = ?",
            (
                len(rows),
                EVENT_FORMAT,
                chain.seal(thread_id, len(rows), head, EVENT_FORMAT, None),
                num,
            ),
        )


# ---- 3: the server's tables -------------------------------------------------------------

_SERVER_TABLES = """
CREATE TABLE IF NOT EXISTS server_tokens (
    id         TEXT PRIMARY KEY,
    person     TEXT NOT NULL,
    hash       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS inbox_sessions (
    id_hash    TEXT PRIMARY KEY,   -- SHA-256 of the cookie's value, hex
    person     TEXT NOT NULL,
    credential TEXT,               -- the id of the token used to sign in
    created    {real} NOT NULL,    -- Unix time, seconds
    expires    {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS server_launches (
    thread_id TEXT PRIMARY KEY,
    person    TEXT NOT NULL,
    via       TEXT NOT NULL,
    at        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS server_forks (
    thread_id TEXT PRIMARY KEY,
    parent    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS server_replies (
    thread_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    address     TEXT NOT NULL,
    replied_seq INTEGER NOT NULL DEFAULT 0,{replies_order}
    PRIMARY KEY (thread_id, kind, address)
);
CREATE TABLE IF NOT EXISTS server_schedule_runs (
    name      TEXT PRIMARY KEY,
    fired_at  TEXT NOT NULL,
    thread_id TEXT
);
CREATE TABLE IF NOT EXISTS slack_messages (
    channel   TEXT NOT NULL,
    ts        TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    request   TEXT NOT NULL,
    title     TEXT NOT NULL,
    closed    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel, ts)
);
"""

# ---- 4: agent versions (runtime/versions.py) and a thread's moves between them ---------

_VERSION_TABLES = """
CREATE TABLE IF NOT EXISTS agent_versions (
    digest     TEXT PRIMARY KEY,  -- SHA-256 of the body: sources as JSON
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL
){without_rowid};
CREATE TABLE IF NOT EXISTS pins (  -- `twelvefold migrate`: a thread's moves, oldest first
    thread       {integer} NOT NULL,
    seq          INTEGER NOT NULL,
    from_version TEXT,
    to_version   TEXT NOT NULL,
    at           TEXT NOT NULL,
    by           TEXT{pins_order}
);
CREATE INDEX IF NOT EXISTS pins_by_thread ON pins (thread);
"""


def _versions_sqlite(db: sqlite3.Connection, chain: Chain) -> None:
    """`threads.version` (the digest of the agent version a thread is pinned to), unless
    a build from before numbered migrations added it already, and the version tables."""
    present = {row[1] for row in db.execute("PRAGMA table_info(threads)")}
    if "version" not in present:
        db.execute("ALTER TABLE threads ADD COLUMN version TEXT")
    script = _VERSION_TABLES.format(
        without_rowid=" WITHOUT ROWID", integer="INTEGER", pins_order=""
    )
    for statement in _statements(script):
        db.execute(statement)


# ---- 5: shared rate limits ----------------------------------------------------------

# Every worker on one PostgreSQL counts its model calls here (runtime/ratelimit.py,
# `StoreLimiter`; runtime/pgstore.py, `rate_turn`): a row per model holds a 429's pause and
# is locked while a turn is decided; a row per call started (`call`) or per token
# correction holds its moment on the database's clock (unix seconds) and its tokens.
_RATE_TABLES = """
CREATE INDEX threads_by_status ON threads (status);
CREATE TABLE rate_models (
    model        text PRIMARY KEY,
    paused_until double precision NOT NULL DEFAULT 0
);
CREATE TABLE rate_calls (
    model  text NOT NULL,
    at     double precision NOT NULL,
    tokens bigint NOT NULL DEFAULT 0,
    call   boolean NOT NULL
);
CREATE INDEX rate_calls_by_model ON rate_calls (model, at);
"""


# ---- 6: a reply's claim is a lease (twelvefold/server/replies.py) ----------------------

# `sending_until` (unix seconds on the database's clock): set while a reply to the target
# is being sent, cleared once it was; a claim whose process died lapses then, and the
# reply is sent again. The index finds the lapsed ones without reading every target.
_REPLY_LEASE_INDEX = (
    "CREATE INDEX IF NOT EXISTS server_replies_sending ON server_replies (sending_until)"
    " WHERE sending_until IS NOT NULL"
)


def _reply_lease_sqlite(db: sqlite3.Connection, chain: Chain) -> None:
    present = {row[1] for row in db.execute("PRAGMA table_info(server_replies)")}
    if "sending_until" not in present:
        db.execute("ALTER TABLE server_replies ADD COLUMN sending_until REAL")
    db.execute(_REPLY_LEASE_INDEX)


# ---- 7: a thread's Slack messages by thread ---------------------------------------------

# `prune --delete` deletes a thread's `slack_messages` by `thread_id`, which the key
# (channel, ts) does not cover: without this, one scan of the whole table per thread.
_SLACK_BY_THREAD = (
    "CREATE INDEX IF NOT EXISTS slack_messages_by_thread ON slack_messages (thread_id);"
)


MIGRATIONS: Sequence[Migration] = (
    Migration(1, "threads and events", _SQLITE_THREADS, _PG_THREADS),
    Migration(2, "hash chain, seals and leases", _chain_sqlite, ""),
    Migration(
        3,
        "server tables",
        _SERVER_TABLES.format(real="REAL", replies_order=""),
        # SQLite lists reply targets in `rowid` order; PostgreSQL has no rowid: `added`.
        _SERVER_TABLES.format(
            real="double precision",
            replies_order="\n    added bigint GENERATED ALWAYS AS IDENTITY,",
        ),
    ),
    Migration(
        4,
        "agent versions and pins",
        _versions_sqlite,
        "ALTER TABLE threads ADD COLUMN version text;"
        # SQLite lists pins in `rowid` order; PostgreSQL has no rowid: `added`.
        + _VERSION_TABLES.format(
            without_rowid="",
            integer="bigint",
            pins_order=",\n    added        bigint GENERATED ALWAYS AS IDENTITY",
        ),
    ),
    Migration(
        5,
        "shared rate limits, threads by status",
        # SQLite's processes count their own limits (runtime/ratelimit.py); the sweep of a
        # store with many threads finds the running ones by status.
        "CREATE INDEX IF NOT EXISTS threads_by_status ON threads (status);",
        _RATE_TABLES,
    ),
    Migration(
        6,
        "reply claims as leases",
        _reply_lease_sqlite,
        "ALTER TABLE server_replies ADD COLUMN sending_until double precision;"
        + _REPLY_LEASE_INDEX,
    ),
    Migration(7, "Slack messages by thread", _SLACK_BY_THREAD, _SLACK_BY_THREAD),
)

CURRENT = MIGRATIONS[-1].version
"""The schema version this code reads and writes."""

ADVISORY_LOCK = 0x7477656C7665  # "twelve": the key upgrades of a PostgreSQL store lock on

_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS twelvefold_schema (version INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


# ---- SQLite ----------------------------------------------------------------------------


def sqlite_version(db: sqlite3.Connection) -> int:
    """The schema version of a SQLite file: the highest applied migration, else what an
    older twelvefold left (`PRAGMA user_version` 2 meant migrations 1 and 2; a `threads`
    table without it meant 1); 0 for an empty file."""
    if _has_table(db, "twelvefold_schema"):
        (found,) = db.execute("SELECT max(version) FROM twelvefold_schema").fetchone()
        return int(found or 0)
    if not _has_first_tables(db):
        # Tables named `threads`, a `user_version` set: another application's file may
        # have either, and taking it for an old store would write WAL mode into it.
        return 0
    return 2 if db.execute("PRAGMA user_version").fetchone()[0] >= 2 else 1


def _has_first_tables(db: sqlite3.Connection) -> bool:
    """Whether `db` has the tables of the first twelvefold stores, with their columns
    (tables: `PRAGMA table_info` answers for a view of that name too)."""
    return all(
        _has_table(db, table)
        and needed <= {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for table, needed in _first_columns().items()
    )


@functools.cache
def _first_columns() -> dict[str, frozenset[str]]:
    """Each table migration 1 makes, and the columns every store has had: migration 1's
    own SQL, less the columns migration 2 adds to files from before it."""
    import sqlite3

    made = sqlite3.connect(":memory:")
    try:
        made.executescript(_SQLITE_THREADS)
        return {
            table: frozenset(row[1] for row in made.execute(f"PRAGMA table_info({table})"))
            - {column for (owner, column, _) in _ADDED_COLUMNS if owner == table}
            for table in ("threads", "events")
        }
    finally:
        made.close()


def sqlite_tables(db: sqlite3.Connection) -> list[str]:
    """The names of a SQLite file's own tables (not SQLite's `sqlite_*`), sorted."""
    rows = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%'"
        " ESCAPE '\\' ORDER BY name"
    )
    return [name for (name,) in rows.fetchall()]


def refuse_foreign(db: sqlite3.Connection, where: str) -> None:
    """`ForeignDatabase` when `db` has tables but no twelvefold schema (version 0): nothing
    of twelvefold's is written into another application's database."""
    if sqlite_version(db) == 0:
        tables = sqlite_tables(db)
        if tables:
            raise ForeignDatabase(where, tables)


def upgrade_sqlite(db: sqlite3.Connection, chain: Chain, where: str) -> list[Migration]:
    """Apply the migrations `db` lacks, in one `BEGIN IMMEDIATE` transaction (a second
    process waits for the write lock, then finds nothing to do); the ones applied.
    `SchemaAhead` for a file a newer twelvefold wrote, `ForeignDatabase` for another
    application's database (tables, none of twelvefold's). `db` is in autocommit mode."""
    if sqlite_version(db) == CURRENT:
        return []
    refuse_foreign(db, where)
    db.execute("BEGIN IMMEDIATE")
    try:
        found = sqlite_version(db)
        if found > CURRENT:
            raise SchemaAhead(where, found)
        versioned = _has_table(db, "twelvefold_schema")
        db.execute(_VERSION_TABLE)
        applied = []
        for migration in MIGRATIONS:
            if migration.version <= found:
                continue
            if isinstance(migration.sqlite, str):
                for statement in _statements(migration.sqlite):
                    db.execute(statement)
            else:
                migration.sqlite(db, chain)
            applied.append(migration)
        # A file from before this table gets a row for the migrations it had too.
        _record(db, "?", MIGRATIONS, found if versioned else 0)
        # Older twelvefold versions read this: at 2 or more they leave the file alone.
        db.execute(f"PRAGMA user_version = {CURRENT}")
        db.execute("COMMIT")
    except BaseException:
        # Not after the COMMIT (a Ctrl-C as it returns): SQLite's "no transaction is
        # active" would replace what stopped the upgrade.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return applied


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return row.fetchone() is not None


def _statements(script: str) -> list[str]:
    """A SQLite script's statements (no `;` in its comments: it splits on them)."""
    return [s.strip() for s in script.split(";") if s.strip()]


def _record(db: Any, mark: str, migrations: Sequence[Migration], after: int) -> None:
    """One `twelvefold_schema` row per migration past `after` (`mark`: the placeholder)."""
    from .store import now_iso

    for migration in migrations:
        if migration.version > after:
            db.execute(
                f"INSERT INTO twelvefold_schema (version, name, applied_at)"
                f" VALUES ({mark}, {mark}, {mark})",
                (migration.version, migration.name, now_iso()),
            )


# ---- PostgreSQL ------------------------------------------------------------------------


def postgresql_version(conn: Any) -> int:
    """The schema version of a PostgreSQL database (0: no twelvefold tables yet)."""
    (exists,) = conn.execute("SELECT to_regclass('twelvefold_schema') IS NOT NULL").fetchone()
    if not exists:
        return 0
    (found,) = conn.execute("SELECT max(version) FROM twelvefold_schema").fetchone()
    return int(found or 0)


@contextlib.contextmanager
def upgrade_lock(conn: Any) -> Iterator[None]:
    """Hold the upgrade's advisory lock (`ADVISORY_LOCK`, a session lock) on `conn` (a
    psycopg connection, not in autocommit) while the block runs: every change of a
    PostgreSQL store's schema, the store's migrations and the job queue's schema
    (twelvefold/server/queue.py), is made under it, so a concurrent upgrade waits, then
    finds nothing left to do. Taken before the block's transaction begins: a transaction
    begun after the wait sees everything (the catalog too) the holder committed; one begun
    inside it would read the tables as they were before."""
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK,))
    conn.commit()
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK,))
        conn.commit()


def upgrade_postgresql(conn: Any, where: str) -> list[Migration]:
    """Apply the migrations the database lacks, in one transaction on `conn` (a psycopg
    connection, not in autocommit) under the upgrade's advisory lock (`upgrade_lock`): a
    concurrent upgrade waits for this one and then finds nothing to do. Commits; the
    migrations applied. `SchemaAhead` for a database a newer twelvefold upgraded."""
    with upgrade_lock(conn), conn.transaction():
        found = postgresql_version(conn)
        if found > CURRENT:
            raise SchemaAhead(where, found)
        if found == 0:
            refuse_taken_names(conn, where)
        conn.execute(_VERSION_TABLE)
        applied = []
        for migration in MIGRATIONS:
            if migration.version > found:
                if migration.postgresql:
                    conn.execute(migration.postgresql)
                applied.append(migration)
        _record(conn, "%s", MIGRATIONS, found)
    return applied


def refuse_taken_names(conn: Any, where: str) -> None:
    """`ForeignDatabase` when a database without twelvefold's schema already has a table
    or an index of a name twelvefold's migrations create (as its search path finds them):
    another application's, which the upgrade would fail on, or use (`IF NOT EXISTS`)."""
    found = conn.execute(
        "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NOT NULL"
        " ORDER BY name",
        (list(_postgresql_relations()),),
    ).fetchall()
    if found:
        raise ForeignDatabase(where, [name for (name,) in found], postgresql=True)


@functools.cache
def _postgresql_relations() -> frozenset[str]:
    """The tables and indexes the PostgreSQL migrations create."""
    made = re.compile(r"CREATE (?:UNIQUE )?(?:TABLE|INDEX) (?:IF NOT EXISTS )?(\w+)", re.I)
    return frozenset(name for m in MIGRATIONS for name in made.findall(m.postgresql))


def check_postgresql(conn: Any, where: str, *, create: bool) -> None:
    """Before a PostgreSQL store is used: set up a database with no twelvefold tables
    (`create`), refuse one whose schema is older (`SchemaBehind`) or newer (`SchemaAhead`)."""
    found = postgresql_version(conn)
    try:
        if found == 0:
            refuse_taken_names(conn, where)
    finally:
        conn.commit()
    if found == CURRENT:
        return
    if found > CURRENT:
        raise SchemaAhead(where, found)
    if found == 0 and create:
        upgrade_postgresql(conn, where)
        return
    if found == 0:
        option, note = store_option(where)
        raise SchemaError(
            f"no thread store at {one_line(where)} yet (`twelvefold run` or "
            f"`twelvefold db upgrade {one_line(option)}`{note} sets it up)"
        )
    raise SchemaBehind(where, found)
