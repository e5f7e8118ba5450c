"""Retention: archive, then delete, threads that ended long ago (`twelvefold prune`).

Only threads that are finished, failed or cancelled, and whose last event is older than
the cut-off, are pruned; a thread that waits or runs is never touched. With an archive,
every pruned thread is first written to it (JSON lines: one thread per line, with its
events as stored and the sources of its agent version) and the file is flushed to disk
(`fsync`, the file and its folder) before anything is deleted. Each deletion checks again,
in the store's transaction, that the thread still holds the events that were archived,
still has a final status and is held by nobody. Agent versions no thread names any more
go too.

    # pyproject.toml (in twelvefold.toml: [retention])
    [tool.twelvefold.retention]
    finished_after = "30d"                 # how old a thread's last event must be
    archive = "archive/threads.jsonl"      # relative to the configuration file's folder
    # delete = true                        # or: delete without an archive
    every = "1h"                           # how often `serve` / the workers prune (1h)
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, toml_key, toml_text
from .store import EventStore, Exported, ThreadInfo
from .types import Status

FINAL: tuple[Status, ...] = ("finished", "failed", "cancelled")
"""The statuses a thread may be pruned in."""

_AGE = re.compile(r"(\d{1,6})([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class RetentionError(ValueError):
    """A retention setting or option that cannot be used (one line for a person)."""


def parse_age(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `45s` or `2w` as a duration; `RetentionError` otherwise."""
    match = _AGE.fullmatch(text.strip())
    if match is None:
        shown = text if text.isprintable() else ascii(text)[1:-1]
        raise RetentionError(f"not an age: {shown!r} (write e.g. 30d, 12h, 90m, 2w)")
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


def _age(where: Path | None, key: str, value: object, example: str) -> timedelta | None:
    """The age `retention.KEY` sets (None when unset); `ConfigError` quoting the value as
    the file spells it when it is not one (`parse_age`'s rule)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse_age(value)
        except RetentionError:
            pass  # said below, with the value as the file spells it
    raise ConfigError(
        f"{where}: `retention.{key}` must be an age like {example} (s, m, h, d or w), "
        f"not {toml_text(value)}"
    )


@dataclass(frozen=True)
class Retention:
    """`[tool.twelvefold.retention]`: what `prune` does when no option says otherwise."""

    finished_after: timedelta | None = None
    archive: Path | None = None
    """Absolute: a relative setting is joined to the configuration file's folder."""
    delete: bool = False
    """Delete without an archive (must be said: nothing is deleted unarchived by default)."""
    every: timedelta | None = None
    """How often `serve` and the workers prune on their own (twelvefold/server/pruning.py);
    None: the default there (1 h)."""

    @classmethod
    def of(cls, config: Config) -> Retention:
        table = config.settings.get("retention", {})
        where = config.path
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: `retention` must be a table, not {toml_text(table)}")
        unknown = sorted(map(str, set(table) - {"finished_after", "archive", "delete", "every"}))
        if unknown:
            keys = ", ".join(toml_key(key) for key in unknown)
            raise ConfigError(f"{where}: unknown retention setting(s): {keys}")
        after, archive, delete = (table.get(k) for k in ("finished_after", "archive", "delete"))
        every = table.get("every")
        if archive is not None and (not isinstance(archive, str) or not archive.strip()):
            raise ConfigError(
                f"{where}: `retention.archive` must be a file name, not {toml_text(archive)}"
            )
        if delete is not None and not isinstance(delete, bool):
            raise ConfigError(
                f"{where}: `retention.delete` must be true or false, not {toml_text(delete)}"
            )
        base = where.parent if where is not None else Path.cwd()
        age = _age(where, "finished_after", after, "30d")
        often = _age(where, "every", every, "1h")
        if often is not None and often <= timedelta(0):
            raise ConfigError(f"{where}: `retention.every` must be longer than 0s")
        return cls(age, base / archive if archive else None, bool(delete), often)


@dataclass(frozen=True)
class Pruned:
    """What a prune did (or, with `dry_run`, would do)."""

    threads: list[str]
    versions: list[str]
    archive: Path | None
    dry_run: bool
    skipped: list[str] = field(default_factory=list)
    """Threads that changed (or were taken) between archiving and deleting, or whose
    status column says they ended while their log does not: kept."""

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "threads": self.threads,
            "versions": self.versions,
            "archive": str(self.archive) if self.archive is not None else None,
            "kept": self.skipped,
        }


def cut_off(now: datetime, older_than: timedelta) -> datetime:
    """`older_than` before `now`; the first moment a datetime holds when that is before the
    year 1 (`--older-than 800000d`): then no thread is old enough, and nothing goes."""
    try:
        return now - older_than
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


def candidates(store: EventStore, older_than: timedelta, now: datetime) -> list[ThreadInfo]:
    """Threads with a final status whose row says they were last written before the cut-off
    (`prune` checks each one's last event again)."""
    cut = cut_off(now, older_than)
    return [
        info
        for info in store.threads()
        if info.status in FINAL and (_moment(info.updated_at) or now) < cut
    ]


def prune(
    store: EventStore,
    *,
    older_than: timedelta,
    archive: Path | None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> Pruned:
    """Archive (when `archive` is given) and delete the threads `candidates` finds whose
    last event is older than `older_than`, then the agent versions nobody names any more.
    With `dry_run`, only say what would go: nothing is written or deleted. Raises
    `RetentionError` when the archive cannot be written (then nothing is deleted)."""
    moment = now or datetime.now(UTC)
    cut = cut_off(moment, older_than)
    exported = [store.export(info.id) for info in candidates(store, older_than, moment)]
    exported = [e for e in exported if (_last_moment(e) or moment) < cut]
    ids = [e.info.id for e in exported]
    versions = store.unused_versions(ids)
    if dry_run:
        return Pruned(ids, versions, archive, True)
    if archive is not None and exported:
        try:
            write_archive(archive, [archive_line(store, e) for e in exported])
        except OSError as exc:  # a full disk, a folder in the way, no permission
            reason = exc.strerror or type(exc).__name__
            raise RetentionError(
                f"cannot write the archive {archive}: {reason}; nothing was deleted"
            ) from exc
    kept = [e.info.id for e in exported if not store.delete(e.info.id, e.info.seq, FINAL)]
    gone = [i for i in ids if i not in kept]
    store.delete_versions(versions)
    return Pruned(gone, store_versions_gone(store, versions), archive, False, kept)


def store_versions_gone(store: EventStore, asked: list[str]) -> list[str]:
    """Those of `asked` that the store no longer holds."""
    return [digest for digest in asked if store.load_version(digest) is None]


def archive_line(store: EventStore, exported: Exported) -> str:
    """One thread as one JSON line: its row, its version's sources, its pins and events."""
    info = exported.info
    version = store.load_version(info.version) if info.version is not None else None
    data = {
        "thread_id": info.id,
        "agent": info.agent,
        "origin": info.origin,
        "status": info.status,
        "step": info.step,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
        "version": info.version,
        "version_sources": json.loads(version) if version else None,
        "pins": [asdict(pin) for pin in exported.pins],
        "events": [json.loads(body) for body in exported.events],
    }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def write_archive(path: Path, lines: list[str]) -> None:
    """Append `lines` to the archive (created 0600: it holds what the store holds, secret
    fields included) and make them durable: the file, then its folder, fsynced.

    The archive itself must not be a symbolic link (opened with `O_NOFOLLOW`: a link
    planted where the archive goes would send every secret to its target) and must be a
    file no one but its owner can read or write (an existing file keeps its mode when
    appended to, so a 0644 one would hand the secrets to every user of the machine), nor
    a pipe.
    `RetentionError` (one line, before anything is written) otherwise; `OSError` when the
    file or its folder cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        descriptor = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RetentionError(
                f"the archive {path} is a symbolic link; name the file itself; nothing was deleted"
            ) from None
        raise
    with os.fdopen(descriptor, "a", encoding="utf-8") as file:
        _check_private(path, os.fstat(descriptor))
        os.set_blocking(descriptor, True)
        for line in lines:
            file.write(line + "\n")
        file.flush()
        os.fsync(file.fileno())
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _check_private(path: Path, status: os.stat_result) -> None:
    """`RetentionError` when the opened archive is a pipe (someone else reads what goes
    in) or a file others may read (mode beyond 0600). A device is the user's own choice
    (`/dev/null`)."""
    if stat.S_ISFIFO(status.st_mode) or stat.S_ISSOCK(status.st_mode):
        raise RetentionError(f"the archive {path} is not a file; nothing was deleted")
    if stat.S_ISREG(status.st_mode) and status.st_mode & 0o077:
        mode = stat.S_IMODE(status.st_mode)
        raise RetentionError(
            f"the archive {path} can be used by others (mode {mode:04o}) and will hold secret"
            f" fields: `chmod 600 {path}` first; nothing was deleted"
        )


def _last_moment(exported: Exported) -> datetime | None:
    if not exported.events:
        return None
    try:
        at = json.loads(exported.events[-1]).get("at")
    except (ValueError, AttributeError):
        return None
    return _moment(at) if isinstance(at, str) else None


def _moment(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
