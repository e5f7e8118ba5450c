"""The PostgreSQL thread store: the SQLite store's contract on a database server, so that
many processes on many machines can share threads (docs/stores.md).

Imported only when a `postgresql://` store is opened (`open_store`), so psycopg costs
nothing to a process that does not use it. Each call borrows a connection from a
psycopg_pool pool and runs one transaction:

- an append locks the thread's row (`SELECT ... FOR UPDATE`), compares the lease and the
  event count with what the caller holds, inserts the events and updates the row, then
  commits: two processes appending at once are serialised on the row, and the second
  finds the count moved (`Conflict`). The `(thread, seq)` primary key backs that up.
- leases are decided on the database's clock (`clock_timestamp()`), one clock for every
  machine, exactly as SQLite's `julianday('now')` is for the processes of one machine.
- a load reads the row and the events in one REPEATABLE READ transaction, so it sees
  exactly the events the row's seal was computed over, even while another process appends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool

from . import lease as leases
from .codec import Codec
from .integrity import EVENT_FORMAT, BrokenLog, Chain
from .lease import Lease, LeaseHeld
from .ratelimit import Limits
from .schema import (
    SchemaError,
    Upgrade,
    check_postgresql,
    postgresql_version,
    upgrade_postgresql,
)
from .store import (
    _INFO_COLUMNS,
    _OPTIONAL_COLUMNS,
    _ROW_AFTER_APPEND,
    _TEXT_COLUMNS,
    ChainedStore,
    Conflict,
    DamagedRow,
    Exported,
    Head,
    Pin,
    Restored,
    Snapshot,
    StoreError,
    ThreadInfo,
    ThreadNotFound,
    UsageRecord,
    _check_lease_columns,
    _info_row,
    _listed,
    _thread_info,
    check_lease,
    check_store_url,
    joined_links,
    now_iso,
    shown_url,
    usage_by_thread,
)
from .store import (
    storable as _storable,
)
from .types import Event, Status

_NOW = "extract(epoch FROM clock_timestamp())::float8"
"""The database's clock in unix seconds: every lease decision is made with this one."""

_INFO_PLACES = ", ".join("%s" for _ in _INFO_COLUMNS.split(", "))

_DAMAGED = " OR ".join(
    [f"{name} IS NULL OR pg_typeof({name}) <> 'text'::regtype" for name in _TEXT_COLUMNS]
    + ["seq IS NULL OR pg_typeof(seq) <> 'integer'::regtype"]
    + [f"pg_typeof({name}) <> 'text'::regtype" for name in _OPTIONAL_COLUMNS]
)
"""Every row `_damage` may find fault with (a NULL, or any row once a column's type was
changed: `_listed` then says which hold a value Python does not read as the schema's)."""

_USAGE_QUERY = """
SELECT t.id, e.j -> 'kind', e.j -> 'at', e.j #> '{usage,latency_ms}',
       e.j #> '{usage,input_tokens}', e.j #> '{usage,output_tokens}', e.j #> '{usage,cost_usd}',
       CASE WHEN e.j IS NULL THEN e.body END
FROM threads t
JOIN LATERAL (
    SELECT seq, body, twelvefold_jsonb(body) AS j FROM events WHERE thread = t.num
) e ON true
ORDER BY t.num, e.seq
"""

_LINKS_QUERY = """
SELECT t.id, e.j ->> 'kind', e.j ->> 'child', e.j ->> 'parent',
       CASE WHEN e.j IS NULL THEN e.body END
FROM threads t
JOIN LATERAL (
    SELECT seq, body, twelvefold_jsonb(body) AS j FROM events WHERE thread = t.num
) e ON true
WHERE e.j IS NULL OR e.j ->> 'kind' IN ('started', 'child_started')
ORDER BY t.num, e.seq
"""

DEFAULT_CONNECT_TIMEOUT = 10
"""Seconds to wait for the database server before saying it cannot be reached, unless
the URL's `connect_timeout` says (`connect_timeout_of`)."""

POOL_WAIT_SECONDS = 30.0
"""How long a call waits for a pooled connection while every one is busy (the database
answers, other calls hold them all): then `StoreError`."""

DEFAULT_LOCK_TIMEOUT = 10
"""Seconds a statement of the store may wait for a lock (PostgreSQL's `lock_timeout`)
before it fails: a table someone locked by hand, or a session left open holding a row,
makes a command fail with one line instead of hanging. Twelvefold's own row locks are
held for one short transaction each."""


class PostgresStore(ChainedStore):
    """Threads in a PostgreSQL database named by a `postgresql://` (or `postgres://`) URL.

    Thread-safe (each call takes a pooled connection; at most `pool_size` at once) and
    shared by any number of processes and machines. The URL's password never appears in
    what the store says (`where`, errors): `shown_url`. With `create=False` a database with
    no twelvefold tables is `StoreError` rather than set up; a schema older than this code
    is `StoreError` naming `twelvefold db upgrade` (runtime/schema.py). An unreachable
    server or a URL libpq cannot use is `StoreError` after at most `connect_timeout`
    seconds (by default the URL's own, else `DEFAULT_CONNECT_TIMEOUT`), at the start and
    at each call once it is open (`_lent`). `chain` defaults to `Chain.from_env()`
    (TWELVEFOLD_LOG_KEY). A statement that waits longer than `lock_timeout` seconds
    (default `DEFAULT_LOCK_TIMEOUT`; 0: no bound) for a lock fails as `StoreError`,
    unless the URL's `options` set a `lock_timeout`."""

    blocking = True

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        chain: Chain | None = None,
        pool_size: int = 10,
        connect_timeout: int | None = None,
        lock_timeout: float | None = None,
    ) -> None:
        self.url = url
        """The URL as given (with its password): pass it on, never show it."""
        self.where = shown_url(url)
        """The URL as it may be shown: without its password."""
        self.chain = chain if chain is not None else Chain.from_env()
        check_store_url(url)
        if connect_timeout is None:
            connect_timeout = connect_timeout_of(url)
        self._timeout = connect_timeout
        try:
            with psycopg.connect(url, connect_timeout=connect_timeout) as conn:
                check_postgresql(conn, self.where, create=create)
        except SchemaError as exc:
            raise StoreError(str(exc)) from None
        except psycopg.Error as exc:
            raise StoreError(f"cannot use the store at {self.where}: {self._reason(exc)}") from None
        bound = DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout
        options = _with_lock_timeout(url, bound)
        self.pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"connect_timeout": connect_timeout, **options},
            timeout=max(POOL_WAIT_SECONDS, connect_timeout),
            # A connection is tried (an empty query) as it leaves the pool: one the server
            # closed (restarted, `pg_terminate_backend`, an idle timeout) is replaced there,
            # instead of failing the first call that borrows it.
            check=psycopg_pool.ConnectionPool.check_connection,
            open=False,
        )
        try:
            self.pool.open(wait=True, timeout=connect_timeout)
        except psycopg_pool.PoolTimeout:
            self.pool.close()
            raise StoreError(f"cannot connect to the store at {self.where}") from None

    def close(self) -> None:
        self.pool.close()

    # ---- the contract --------------------------------------------------------------

    def create(
        self,
        info: ThreadInfo,
        events: Sequence[Event],
        codec: Codec,
        *,
        reducer: str | None = None,
        owner: str | None = None,
        seconds: float | None = None,
    ) -> Lease | None:
        bodies, hashes, seal = self._first_links(info.id, events, codec, reducer, info.version)
        length = leases.lease_seconds(seconds) if owner is not None else 0.0
        with self._transaction() as conn:
            row = conn.execute(
                f"INSERT INTO threads ({_INFO_COLUMNS}, format, reducer, head_seal,"
                f" lease_owner, lease_token, lease_until) VALUES"
                f" ({_INFO_PLACES}, %s, %s, %s, %s, %s, {_NOW} + %s)"
                " ON CONFLICT (id) DO NOTHING RETURNING num, lease_until",
                (*_info_row(info), EVENT_FORMAT, reducer, seal, owner, 1, length),
            ).fetchone()
            if row is None:
                raise Conflict(info.id, 0, -1)
            num, expires = row
            self._insert_events(conn, num, 0, bodies, hashes)
        return None if owner is None else Lease(info.id, owner, 1, float(expires))

    def append(
        self,
        thread_id: str,
        expected_seq: int,
        events: Sequence[Event],
        codec: Codec,
        head: Head,
        lease: Lease | None = None,
    ) -> None:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT t.num, t.seq, t.lease_owner, t.lease_token, t.lease_until,"
                f" {_NOW}, (SELECT hash FROM events e WHERE e.thread = t.num AND e.seq = t.seq),"
                " t.version FROM threads t WHERE t.id = %s FOR UPDATE OF t",
                (_findable(thread_id),),
            ).fetchone()
            if row is None:
                raise ThreadNotFound(thread_id)
            num, seq, holder, token, until, now, last_hash, version = row
            _check_lease_columns(thread_id, holder, token, until)
            check_lease(thread_id, lease, holder, token, until, now)
            if seq != expected_seq:
                raise Conflict(thread_id, expected_seq, seq)
            if seq == 0:
                previous = self.chain.genesis(thread_id)
            elif isinstance(last_hash, bytes):
                previous = last_hash
            else:
                raise BrokenLog(thread_id, seq, "the last event has no hash")
            bodies, hashes, values = self._appended(
                thread_id, seq, previous, events, codec, head, version
            )
            self._insert_events(conn, num, seq, bodies, hashes)
            conn.execute(
                f"UPDATE threads SET {_ROW_AFTER_APPEND} WHERE num = %s".replace("?", "%s"),
                (*values, num),
            )

    def load(self, thread_id: str, codec: Codec) -> list[Event]:
        return self.restore(thread_id, codec).events

    def restore(self, thread_id: str, codec: Codec) -> Restored:
        with self._transaction(snapshot=True) as conn:
            row = conn.execute(
                "SELECT num, seq, format, reducer, head_seal, snapshot, snapshot_seal,"
                " version FROM threads WHERE id = %s",
                (_findable(thread_id),),
            ).fetchone()
            if row is None:
                raise ThreadNotFound(thread_id)
            bodies = [
                body
                for (body,) in conn.execute(
                    "SELECT body FROM events WHERE thread = %s ORDER BY seq", (row[0],)
                )
            ]
        return self._verified(thread_id, row[0], row[1:], bodies, codec)

    def snapshot(self, thread_id: str) -> Snapshot | None:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT snapshot, snapshot_seal FROM threads WHERE id = %s",
                (_findable(thread_id),),
            ).fetchone()
        return None if row is None else self._unsealed_snapshot(thread_id, row[0], row[1])

    def acquire(self, thread_id: str, owner: str, seconds: float) -> Lease:
        length = leases.lease_seconds(seconds)
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT num, lease_owner, lease_token, lease_until, {_NOW} FROM threads"
                " WHERE id = %s FOR UPDATE",
                (_findable(thread_id),),
            ).fetchone()
            if row is None:
                raise ThreadNotFound(thread_id)
            num, holder, token, until, now = row
            _check_lease_columns(thread_id, holder, token, until)
            if holder is not None and until is not None and until > now:
                raise LeaseHeld(thread_id, holder, until)
            expires = now + length
            conn.execute(
                "UPDATE threads SET lease_owner = %s, lease_token = %s, lease_until = %s"
                " WHERE num = %s",
                (owner, token + 1, expires, num),
            )
        return Lease(thread_id, owner, token + 1, expires)

    def renew(self, lease: Lease, seconds: float) -> Lease:
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT num, lease_owner, lease_token, lease_until, {_NOW} FROM threads"
                " WHERE id = %s FOR UPDATE",
                (_findable(lease.thread_id),),
            ).fetchone()
            if row is None:
                raise ThreadNotFound(lease.thread_id)
            num, holder, token, until, now = row
            _check_lease_columns(lease.thread_id, holder, token, until)
            check_lease(lease.thread_id, lease, holder, token, until, now)
            expires = now + seconds
            conn.execute("UPDATE threads SET lease_until = %s WHERE num = %s", (expires, num))
        return leases.extended(lease, expires)

    def release(self, lease: Lease) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE threads SET lease_owner = NULL, lease_until = NULL"
                " WHERE id = %s AND lease_owner = %s AND lease_token = %s",
                (_findable(lease.thread_id), lease.owner, lease.token),
            )

    def lease(self, thread_id: str) -> Lease | None:
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT lease_owner, lease_token, lease_until, {_NOW} FROM threads WHERE id = %s",
                (_findable(thread_id),),
            ).fetchone()
        if row is None:
            raise ThreadNotFound(thread_id)
        holder, token, until, now = row
        _check_lease_columns(thread_id, holder, token, until)
        if holder is None or until is None or until <= now:
            return None
        return Lease(thread_id, holder, token, until)

    def info(self, thread_id: str) -> ThreadInfo:
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {_INFO_COLUMNS} FROM threads WHERE id = %s", (_findable(thread_id),)
            ).fetchone()
        if row is None:
            raise ThreadNotFound(thread_id)
        return _thread_info(row, self.where)

    def threads(self, status: Status | None = None, *, unleased: bool = False) -> list[ThreadInfo]:
        query = f"SELECT {_INFO_COLUMNS} FROM threads WHERE true"
        params: tuple[str, ...] = ()
        if status is not None:
            query, params = query + " AND status = %s", (status,)
        if unleased:  # on the database's clock, as every lease decision
            query += f" AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= {_NOW})"
        with self._transaction() as conn:
            rows = conn.execute(query + " ORDER BY updated_at DESC", params).fetchall()
        return _listed(rows)[0]

    def damaged_threads(self) -> list[DamagedRow]:
        """The rows `threads` leaves out because they are damaged (`DamagedRow`: the
        columns' types keep most damage out; a column altered by hand lets a NULL in)."""
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {_INFO_COLUMNS} FROM threads WHERE {_DAMAGED} ORDER BY num"
            ).fetchall()
        return _listed(rows)[1]

    def usage_records(self) -> dict[str, list[UsageRecord]]:
        """Every thread's `(kind, at, usage)` per event, in order, read by PostgreSQL from
        the stored JSON (as `SqliteStore.usage_records`); the log is not verified."""
        with self._transaction(snapshot=True) as conn:
            rows = conn.execute(_USAGE_QUERY).fetchall()
        return usage_by_thread(rows)

    def child_links(self) -> dict[str, list[str]]:
        """Each parent's sub-agent threads, by the links both logs make (`joined_links`),
        read by PostgreSQL from the stored JSON; the log is not verified."""
        with self._transaction(snapshot=True) as conn:
            rows = conn.execute(_LINKS_QUERY).fetchall()
        return joined_links(rows)

    # ---- rate limits shared by every process (runtime/ratelimit.py, `SharedWindows`) ----

    def rate_turn(self, model: str, limits: Limits, tokens: int, window: float) -> float:
        """One turn decided for every process at once: the model's row is locked (turns
        of one model are serialised; other models' are not), calls older than `window`
        seconds are dropped, and the call counts when fewer than `limits.requests` started
        within it and fewer than `limits.tokens` were used, on the database's clock. 0
        when it starts now (its row written), else the seconds to wait. `StoreError` when
        the database fails."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO rate_models (model) VALUES (%s) ON CONFLICT DO NOTHING", (model,)
            )
            row = conn.execute(
                f"SELECT paused_until, {_NOW} FROM rate_models WHERE model = %s FOR UPDATE",
                (model,),
            ).fetchone()
            assert row is not None
            paused_until, now = float(row[0]), float(row[1])
            since = now - window
            conn.execute("DELETE FROM rate_calls WHERE model = %s AND at <= %s", (model, since))
            counted = conn.execute(
                "SELECT count(*) FILTER (WHERE call), coalesce(sum(tokens), 0),"
                " min(at) FILTER (WHERE call), min(at) FILTER (WHERE tokens <> 0)"
                " FROM rate_calls WHERE model = %s",
                (model,),
            ).fetchone()
            assert counted is not None  # an aggregate always has its row
            calls, used, first_call, first_token = counted
            waits = [paused_until - now]
            if limits.requests is not None and calls >= limits.requests:
                waits.append(float(first_call) + window - now)
            if limits.tokens is not None and used >= limits.tokens:
                waits.append(float(first_token) + window - now)
            wait = max(waits)
            if wait > 0:
                return max(wait, 0.001)
            conn.execute(
                "INSERT INTO rate_calls (model, at, tokens, call) VALUES (%s, %s, %s, true)",
                (model, now, tokens),
            )
            return 0.0

    def rate_spent(self, model: str, correction: int) -> None:
        with self._transaction() as conn:
            conn.execute(
                f"INSERT INTO rate_calls (model, at, tokens, call) VALUES (%s, {_NOW}, %s, false)",
                (model, correction),
            )

    def rate_pause(self, model: str, seconds: float) -> None:
        with self._transaction() as conn:
            conn.execute(
                f"INSERT INTO rate_models AS m (model, paused_until) VALUES (%s, {_NOW} + %s)"
                " ON CONFLICT (model) DO UPDATE SET"
                " paused_until = greatest(m.paused_until, excluded.paused_until)",
                (model, seconds),
            )

    # ---- versions and retention (docs/versions.md) --------------------------------------

    def save_version(self, digest: str, body: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO agent_versions (digest, body, created_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (digest) DO NOTHING",
                (digest, body, now_iso()),
            )

    def load_version(self, digest: str) -> str | None:
        if not _storable(digest):
            return None
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT body FROM agent_versions WHERE digest = %s", (digest,)
            ).fetchone()
        return None if row is None else str(row[0])

    def repin(
        self,
        thread_id: str,
        expected_seq: int,
        version: str,
        lease: Lease,
        *,
        at: str,
        by: str | None = None,
    ) -> None:
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT num, seq, lease_owner, lease_token, lease_until, {_NOW}, version,"
                " format, reducer, head_seal,"
                " (SELECT hash FROM events e WHERE e.thread = t.num AND e.seq = t.seq)"
                " FROM threads t WHERE id = %s FOR UPDATE",
                (_findable(thread_id),),
            ).fetchone()
            if row is None:
                raise ThreadNotFound(thread_id)
            num, seq, holder, token, until, now, before, format, reducer, head_seal, last = row
            _check_lease_columns(thread_id, holder, token, until)
            check_lease(thread_id, lease, holder, token, until, now)
            if seq != expected_seq:
                raise Conflict(thread_id, expected_seq, seq)
            known = (
                _storable(version)
                and conn.execute(
                    "SELECT 1 FROM agent_versions WHERE digest = %s", (version,)
                ).fetchone()
            )
            if not known:
                raise StoreError(f"agent version {version[:16]} is not in this store")
            seal = self._resealed(
                thread_id, (seq, format, reducer, head_seal, before), last, version
            )
            conn.execute(
                "INSERT INTO pins (thread, seq, from_version, to_version, at, by)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (num, seq, before, version, at, by),
            )
            # The snapshot was computed by the old reducer: the next load replays instead.
            # The head seal covers the version: a version changed by hand breaks it.
            conn.execute(
                "UPDATE threads SET version = %s, head_seal = %s, snapshot = NULL,"
                " snapshot_seal = NULL WHERE num = %s",
                (version, seal, num),
            )

    def pins(self, thread_id: str) -> list[Pin]:
        with self._transaction(snapshot=True) as conn:
            return self._pins(conn, thread_id)

    def export(self, thread_id: str) -> Exported:
        with self._transaction(snapshot=True) as conn:
            row = conn.execute(
                f"SELECT num, {_INFO_COLUMNS} FROM threads WHERE id = %s",
                (_findable(thread_id),),
            ).fetchone()
            if row is None:
                raise ThreadNotFound(thread_id)
            bodies = [
                str(body)
                for (body,) in conn.execute(
                    "SELECT body FROM events WHERE thread = %s ORDER BY seq", (row[0],)
                )
            ]
            pins = self._pins(conn, thread_id)
        return Exported(_thread_info(row[1:], self.where), bodies, pins)

    def delete(self, thread_id: str, expected_seq: int, statuses: Sequence[Status]) -> bool:
        if not _storable(thread_id):
            return False
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT num, seq, format, reducer, head_seal, snapshot, snapshot_seal, version"
                " FROM threads WHERE id = %s AND seq = %s AND status = ANY(%s)"
                f" AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= {_NOW})"
                " FOR UPDATE",
                (thread_id, expected_seq, list(statuses)),
            ).fetchone()
            if row is None:
                return False
            bodies = [
                str(body)
                for (body,) in conn.execute(
                    "SELECT body FROM events WHERE thread = %s ORDER BY seq", (row[0],)
                )
            ]
            if not self._ended_by_log(thread_id, row[1:], bodies, statuses):
                return False  # the column says it ended; its log does not
            for table, column in (("events", "thread"), ("pins", "thread"), ("threads", "num")):
                conn.execute(f"DELETE FROM {table} WHERE {column} = %s", (row[0],))
            # The server's rows of the thread: where its replies went (nothing is told of a
            # thread now gone) and its Slack messages (no button of it is updated again).
            # Who launched it (`server_launches`) stays, and what it was forked from is
            # kept (`server_forks`) now that its log goes: the four-eyes rule reads them
            # for the forks made of it.
            for table in ("server_replies", "slack_messages"):
                conn.execute(f"DELETE FROM {table} WHERE thread_id = %s", (thread_id,))
            parent = self._forked_from(bodies)
            if parent is not None:
                conn.execute(
                    "INSERT INTO server_forks (thread_id, parent) VALUES (%s, %s)"
                    " ON CONFLICT (thread_id) DO NOTHING",
                    (thread_id, parent),
                )
            return True

    def unused_versions(self, dropping: Sequence[str] = ()) -> list[str]:
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT v.digest FROM agent_versions v WHERE NOT EXISTS"
                " (SELECT 1 FROM threads t WHERE t.version = v.digest AND t.id <> ALL(%s))"
                ' ORDER BY v.digest COLLATE "C"',
                ([d for d in dropping if _storable(d)],),
            ).fetchall()
        return [str(digest) for (digest,) in rows]

    def delete_versions(self, digests: Sequence[str]) -> int:
        gone = 0
        with self._transaction() as conn:
            for digest in filter(_storable, digests):
                gone += conn.execute(
                    "DELETE FROM agent_versions WHERE digest = %s AND NOT EXISTS"
                    " (SELECT 1 FROM threads WHERE version = %s)",
                    (digest, digest),
                ).rowcount
        return gone

    # ---- helpers -----------------------------------------------------------------------

    def _pins(self, conn: psycopg.Connection[Any], thread_id: str) -> list[Pin]:
        row = conn.execute(
            "SELECT num FROM threads WHERE id = %s", (_findable(thread_id),)
        ).fetchone()
        if row is None:
            raise ThreadNotFound(thread_id)
        rows = conn.execute(
            "SELECT seq, from_version, to_version, at, by FROM pins WHERE thread = %s"
            " ORDER BY added",
            (row[0],),
        ).fetchall()
        return [Pin(*pin) for pin in rows]

    def _stored_hashes(self, num: int) -> list[bytes | None]:
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT hash FROM events WHERE thread = %s ORDER BY seq", (num,)
            ).fetchall()
        return [digest for (digest,) in rows]

    def _insert_events(
        self,
        conn: psycopg.Connection[Any],
        num: int,
        after_seq: int,
        bodies: Sequence[str],
        hashes: Sequence[bytes],
    ) -> None:
        if not bodies:
            return
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO events (thread, seq, body, hash) VALUES (%s, %s, %s, %s)",
                [
                    (num, after_seq + i, body, digest)
                    for i, (body, digest) in enumerate(zip(bodies, hashes, strict=True), start=1)
                ],
            )

    @contextlib.contextmanager
    def _transaction(self, *, snapshot: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a pooled connection: committed when the block ends, rolled
        back on any exception. With `snapshot`, REPEATABLE READ (every statement sees the
        same moment). A database that cannot be reached is `StoreError`, one line."""
        try:
            conn = self._lent()
            try:
                with conn:  # (a pooled connection's `with` commits or rolls back)
                    if snapshot:
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    yield conn
            finally:
                self.pool.putconn(conn)
        except psycopg.errors.LockNotAvailable:
            raise StoreError(
                f"the store at {self.where} is busy: a lock it needs was not granted within"
                " its lock_timeout (another session holds a table or row locked); nothing"
                " was changed"
            ) from None
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            # Unreachable, restarted, a full disk, a row edited into what twelvefold never
            # writes: PostgreSQL's words, one line, without the password.
            raise StoreError(f"the store at {self.where} failed: {self._reason(exc)}") from None

    def _lent(self) -> psycopg.Connection[Any]:
        """A connection of the pool. While the database cannot be reached the pool has
        none to lend and tries again in the background for minutes, and a call would
        wait for the pool's whole `timeout` (30 s) whatever `connect_timeout` said: so a
        call waits `connect_timeout` seconds at first, then asks the server itself with a
        new connection. One that fails is this call's error (the server's words:
        `Connection refused`); one that succeeds means every pooled connection is busy,
        and the call waits for one the rest of `POOL_WAIT_SECONDS`."""
        try:
            return self.pool.getconn(timeout=self._timeout)
        except psycopg_pool.PoolTimeout:
            pass
        psycopg.connect(self.url, connect_timeout=self._timeout).close()
        return self.pool.getconn(timeout=max(1.0, POOL_WAIT_SECONDS - self._timeout))

    def _reason(self, exc: BaseException) -> str:
        """An error's message on one line, with anything that could be the password cut."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        return shown_url(text, secret_of=self.url)


def upgrade_database(url: str, *, connect_timeout: int | None = None) -> Upgrade:
    """Bring the PostgreSQL database at `url` to this code's schema (`twelvefold db
    upgrade`): one transaction under an advisory lock, so it is safe to run from several
    places at once and while other processes use the store. `StoreError` (one line,
    without the password) when it cannot be reached (within `connect_timeout` seconds: by
    default the URL's, `connect_timeout_of`) or refuses."""
    where = shown_url(url)
    check_store_url(url)
    if connect_timeout is None:
        connect_timeout = connect_timeout_of(url)
    try:
        with psycopg.connect(url, connect_timeout=connect_timeout) as conn:
            before = postgresql_version(conn)
            conn.commit()
            return Upgrade(where, before, upgrade_postgresql(conn, where))
    except SchemaError as exc:
        raise StoreError(str(exc)) from None
    except psycopg.Error as exc:
        text = shown_url(" ".join(str(exc).split()), secret_of=url)
        raise StoreError(f"cannot use the store at {where}: {text}") from None


def connect_timeout_of(url: str) -> int:
    """Seconds to wait for the server at `url`: the URL's `connect_timeout` when it is a
    positive whole number (2 at least, as libpq reads it), else `DEFAULT_CONNECT_TIMEOUT`
    (libpq's 0 or none would wait without end: a command or a server's call never does)."""
    try:
        given = psycopg.conninfo.conninfo_to_dict(url).get("connect_timeout")
        seconds = int(str(given).strip()) if given is not None else 0
    except (psycopg.Error, ValueError):
        return DEFAULT_CONNECT_TIMEOUT  # the connection says what is wrong with the URL
    return max(2, seconds) if seconds > 0 else DEFAULT_CONNECT_TIMEOUT


def _with_lock_timeout(url: str, seconds: float) -> dict[str, str]:
    """The `options` connection parameter that bounds the store's lock waits: what the
    URL's `options` (else `PGOPTIONS`) already says, plus `-c lock_timeout=…ms`, unless
    it sets a `lock_timeout` of its own (then it wins: `?options=-c%20lock_timeout%3D30s`).
    Empty (nothing passed) when `seconds` is 0 or less and nothing else is to be kept."""
    import os

    given = psycopg.conninfo.conninfo_to_dict(url).get("options")
    base = str(given) if given is not None else os.environ.get("PGOPTIONS", "")
    if "lock_timeout" in base or seconds <= 0:
        return {}
    return {"options": f"{base} -c lock_timeout={max(1, round(seconds * 1000))}".strip()}


def _findable(thread_id: str) -> str:
    """`thread_id`, or ThreadNotFound for one no row can hold (`_storable`)."""
    if not _storable(thread_id):
        raise ThreadNotFound(thread_id)
    return thread_id
