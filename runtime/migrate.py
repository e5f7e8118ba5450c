"""Moving stored threads to a new version of their agent (`twelvefold migrate`).

`check` replays every unfinished thread of an agent through the new version's reducer and
says, per thread, whether it can move and, if not, why: the event that does not decode or
that the new reducer refuses (its number), or a wait the new version does not have (the
thread would wait at another step, for another request, or for something else). `move`
pins the threads that can move to the new version (`EventStore.repin`, recorded in the
thread's version history), each under its lease, so a thread that a process is advancing
is refused, and one that changed in between is judged again.

A thread is never rewritten: its log stays as it is, and moving only changes which
reducer reads it from then on (docs/versions.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .integrity import LogError
from .lease import LeaseHeld
from .loop import Agent
from .names import declared_name
from .store import Conflict, ThreadInfo, now_iso
from .types import AwaitSignal, CallAgent, Event, State, Status

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .api import AsyncRuntime

UNFINISHED: tuple[Status, ...] = ("running", "waiting", "failed")
"""The statuses a thread may still move on from (a failed thread can be retried)."""


@dataclass(frozen=True)
class Verdict:
    """Whether one thread can move to the new version, and why not."""

    thread_id: str
    status: Status
    step: str
    events: int
    from_version: str | None
    to_version: str
    movable: bool
    reason: str | None = None
    """Why it cannot move (None when it can)."""
    seq: int | None = None
    """The number of the event that does not fit the new version, when one does not."""
    moved: bool = False
    """Whether `move` moved it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "thread_id": self.thread_id,
            "status": self.status,
            "step": self.step,
            "events": self.events,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "can_move": self.movable,
            "reason": self.reason,
            "event": self.seq,
            "moved": self.moved,
        }


def replay_problem(new: Agent, events: Sequence[Event]) -> tuple[int, str] | None:
    """The first event (its number, 1-based) the new reducer refuses, and why; None when
    the whole log replays."""
    if not events:
        return 1, "the log is empty"
    try:
        state = new.module.replay(events[:1])
    except Exception as exc:
        return 1, f"{type(exc).__name__}: {exc}"
    for seq, event in enumerate(events[1:], start=2):
        try:
            state = new.module.reduce(state, event)
        except Exception as exc:
            return seq, str(exc)
    return None


def wait_problem(old: Agent, old_state: State, new: Agent, new_state: State) -> str | None:
    """Why the thread would stand elsewhere under the new version than under its own: a
    changed status or step, a pending request the new version does not have, or a wait for
    something else. None when it stands in the same place."""
    if (old_state.status, old_state.step) != (new_state.status, new_state.step):
        return (
            f"it is {old_state.status} at `{old_state.step}`, but the new version replays it "
            f"to {new_state.status} at `{new_state.step}`"
        )
    if old_state.status != "waiting":
        return None
    if old_state.request != new_state.request:
        return (
            f"its pending request `{old_state.request}` is not one the new version has "
            f"(it would wait on `{new_state.request}`)"
        )
    before = old.module.next_action(old_state)
    after = new.module.next_action(new_state)
    if _wait_kind(before) != _wait_kind(after):
        return (
            f"it waits at `{old_state.step}` for {_wait_kind(before)}, but the new version "
            f"would wait for {_wait_kind(after)}"
        )
    # The child stays on its own version, so what it returns keeps the old shape: the new
    # version must take exactly that shape, or the parent fails on a result the child may
    # already have paid for.
    if (
        isinstance(before, CallAgent)
        and isinstance(after, CallAgent)
        and _shape(before.output) != _shape(after.output)
    ):
        return (
            f"it waits at `{old_state.step}` for its sub-agent's {declared_name(before.output)}, "
            "and the new version expects another shape of it (the child, on its own version, "
            "returns the old one)"
        )
    return None


def _shape(model: type[BaseModel]) -> str:
    """A type's JSON Schema (Draft 2020-12, as pydantic writes it) as canonical text."""
    import json  # only a check of a waiting parent needs it

    return json.dumps(model.model_json_schema(), sort_keys=True)


def _wait_kind(action: object) -> str:
    if isinstance(action, AwaitSignal):
        return f"an event of type {declared_name(action.event)}"
    return {
        "AwaitApproval": "an approval",
        "AwaitAnswer": "an answer",
        "Sleep": "a timer",
        "CallAgent": "its sub-agent",
    }.get(type(action).__name__, type(action).__name__)


async def judge(rt: AsyncRuntime, info: ThreadInfo, new: Agent) -> Verdict:
    """Whether thread `info` can move to `new` (an agent loaded from a `.agent` file)."""
    assert new.version is not None
    target = new.version.digest

    def verdict(movable: bool, reason: str | None = None, seq: int | None = None) -> Verdict:
        return Verdict(
            info.id, info.status, info.step, info.seq, info.version, target, movable, reason, seq
        )

    if info.version == target:
        return verdict(False, "it already runs this version")
    try:
        old = await rt.agent_of(info.id)
        thread = await rt.engine.load(old, info.id)
    except Exception as exc:  # its own version cannot be loaded: nothing to compare with
        return verdict(False, f"its own version cannot be loaded: {type(exc).__name__}: {exc}")
    try:
        restored = await rt.engine._io(rt.store.restore, info.id, new.codec)
    except LogError as exc:
        seq = _undecodable(new, await rt.engine._io(rt.store.export, info.id))
        return verdict(False, f"an event does not fit the new version's types: {exc}", seq)
    problem = replay_problem(new, restored.events)
    if problem is not None:
        seq, why = problem
        return verdict(False, f"the new version refuses event {seq}: {why}", seq)
    moved_state = new.module.replay(restored.events)
    why_not = wait_problem(old, thread.state, new, moved_state)
    if why_not is not None:
        return verdict(False, why_not)
    return verdict(True)


def _undecodable(new: Agent, exported: Any) -> int | None:
    for seq, body in enumerate(exported.events, start=1):
        try:
            new.codec.loads_event(body)
        except Exception:
            return seq
    return None


async def check(rt: AsyncRuntime, new: Agent) -> list[Verdict]:
    """A verdict for every unfinished thread of `new`'s agent (by name) in the store."""
    found = [
        info for info in await rt.threads() if info.agent == new.name and info.status in UNFINISHED
    ]
    return [await judge(rt, info, new) for info in found]


async def move(rt: AsyncRuntime, new: Agent, *, by: str | None = None) -> list[Verdict]:
    """Pin every unfinished thread of `new`'s agent that can move to `new`'s version, each
    under its lease and judged again under it; threads that are running (status, or a
    process holds their lease) are refused and left as they are."""
    assert new.version is not None
    await rt.engine._io(rt.store.save_version, new.version.digest, new.version.to_json())
    results: list[Verdict] = []
    for info in await rt.threads():
        if info.agent != new.name or info.status not in UNFINISHED:
            continue
        results.append(await _move_one(rt, info, new, by))
    return results


async def _move_one(rt: AsyncRuntime, info: ThreadInfo, new: Agent, by: str | None) -> Verdict:
    engine = rt.engine
    try:
        lease = await engine._io(rt.store.acquire, info.id, engine.owner, engine.lease_seconds)
    except LeaseHeld as exc:
        return _refused(await judge(rt, info, new), f"a process is advancing it ({exc})")
    try:
        info = await rt.info(info.id)  # as it is now that nobody else can change it
        verdict = await judge(rt, info, new)
        if not verdict.movable:
            return verdict
        if info.status == "running":
            return _refused(verdict, "it is running: migrate it once it waits, fails or finishes")
        try:
            await engine._io(
                rt.store.repin, info.id, info.seq, verdict.to_version, lease, at=now_iso(), by=by
            )
        except Conflict as exc:
            return _refused(verdict, str(exc))
        return replace(verdict, moved=True)
    finally:
        await engine._io(rt.store.release, lease)


def _refused(verdict: Verdict, reason: str) -> Verdict:
    return replace(verdict, movable=False, reason=reason)
