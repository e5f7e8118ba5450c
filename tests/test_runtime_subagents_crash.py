"""Sub-agents survive SIGKILL at any point: real processes, a real SQLite file.

Workers drive eight returns threads (examples/returns.agent) from their stored start
through the lookup, the refunds sub-agent (created, approved, paid) and the report back
to the parent, and are SIGKILLed after a growing number of appends; each new worker picks
up wherever the last one died. Afterwards every parent holds exactly one `child_started`
and one `child_ended`, exactly one child thread exists per parent (its id is the parent's
and the request's), every child holds one approval and one payment, and every append a
worker saw acknowledged is in its log (nothing lost, nothing duplicated).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.runtime_helpers import EXAMPLES, ScriptedModel, no_messages
from tests.support.kills import run_and_kill
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.lease import LeaseHeld
from twelvefold.runtime.loop import Thread
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.types import (
    Approved,
    ChildEnded,
    ChildStarted,
    Event,
    Started,
    ToolResult,
)

RETURNS = EXAMPLES / "returns.agent"
THREADS = 8
LEASE = 0.5


def returned(n: int) -> dict[str, object]:
    return {"order_id": f"o-{n}", "email": f"c{n}@example.com", "amount_cents": 100 + n}


def drive(rt: Runtime, store: SqliteStore, parent: str) -> None:
    """One step towards the parent waiting for its parcel, from wherever it stands."""
    view = rt.get(parent)
    if view.status == "running" or (view.waiting_for == "agent" and view.child is None):
        rt.resume(parent)
        return
    assert view.child is not None, view
    child = rt.get(view.child)
    if child.waiting_for == "approval":
        rt.resume(child.id, approve=True, by="ana", request=child.request)
    elif child.status == "running":
        rt.resume(child.id)
    else:
        rt.resume(parent)  # the child ended and its report was lost: deliver it


def worker(db: Path, cache: Path, ids: list[str], acks: int) -> None:
    def acknowledge(thread: Thread, event: Event) -> None:
        os.write(acks, f"{thread.id} {len(thread.events)}\n".encode())

    store = SqliteStore(db)
    rt = Runtime(
        store, model=ScriptedModel([]), messages=no_messages, cache_dir=cache,
        on_event=acknowledge, lease_seconds=LEASE,
    )  # fmt: skip
    for parent in ids:
        while rt.get(parent).step != "await_parcel":
            try:
                drive(rt, store, parent)
            except LeaseHeld as held:  # a killed worker's lease: wait until it lapses
                while store.lease(held.thread_id) is not None:
                    time.sleep(0.02)
    store.close()
    os._exit(0)


def test_a_child_and_its_parent_survive_sigkill_once_and_only_once(tmp_path: Path) -> None:
    db, cache = tmp_path / "threads.db", tmp_path / "cache"
    setup = SqliteStore(db)
    with Runtime(setup, model=ScriptedModel([]), messages=no_messages, cache_dir=cache) as rt:
        ids = [rt._run(rt.aio.launch(RETURNS, returned(n), run=False)).id for n in range(THREADS)]
    setup.close()

    acknowledged: set[tuple[str, int]] = set()
    for kill_after in [*range(1, THREADS * 12, 5), None]:
        acknowledged |= run_and_kill(worker, (db, cache, ids), kill_after)

    problems = []
    check = SqliteStore(db)
    with Runtime(check, model=ScriptedModel([]), messages=no_messages, cache_dir=cache) as rt:
        all_ids = [info.id for info in rt.threads()]
        for parent in ids:
            events = rt.events(parent)
            started = [e.child for e in events if isinstance(e, ChildStarted)]
            ended = [e.child for e in events if isinstance(e, ChildEnded)]
            children = [i for i in all_ids if i.startswith(f"{parent}~")]
            if len(started) != 1 or ended != started or children != started:
                problems.append(f"{parent}: started {started}, ended {ended}, threads {children}")
                continue
            child = rt.events(children[0])
            first = child[0]
            if not isinstance(first, Started) or first.parent != parent:
                problems.append(f"{children[0]}: not linked to {parent}")
            approvals = sum(isinstance(e, Approved) for e in child)
            paid = sum(isinstance(e, ToolResult) for e in child)
            if (approvals, paid) != (1, 1):
                problems.append(f"{children[0]}: {approvals} approvals, {paid} payments")
            for thread_id in (parent, children[0]):
                length = len(rt.events(thread_id))
                lost = [c for t, c in acknowledged if t == thread_id and c > length]
                if lost:
                    problems.append(f"{thread_id}: acknowledged appends {lost} are missing")
            if rt.get(parent).step != "await_parcel":
                problems.append(f"{parent}: at {rt.get(parent).step}")
    check.close()
    assert problems == []
