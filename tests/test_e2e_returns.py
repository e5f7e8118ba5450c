"""examples/returns.agent end to end: tool routing on a trusted tier, a sub-agent with its
own thread and its own approval, then a wait for an outside event.

The child (returns/refunds.agent) runs as its own thread whose id is the parent's and the
request's; both logs link to each other; the parent waits for the child (holding nothing)
and is woken with the child's final value, typed; a cancelled child is the parent step's
error; a child's end is delivered exactly once however often it is looked at again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.runtime_helpers import EXAMPLES, ScriptedModel, no_messages
from twelvefold.runtime.api import ChildSettled, RequestNotPending, Runtime
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.types import (
    Cancelled,
    ChildEnded,
    ChildFailed,
    ChildStarted,
    Started,
)

RETURNS = EXAMPLES / "returns.agent"


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    store = SqliteStore(tmp_path / "threads.db")
    runtime = Runtime(
        store, model=ScriptedModel([]), messages=no_messages, cache_dir=tmp_path / "cache"
    )
    yield runtime
    runtime.close()


def returned(email: str = "ana@example.com") -> dict[str, object]:
    return {"order_id": "o-1", "email": email, "amount_cents": 1200}


def test_the_parent_waits_for_its_child_and_goes_on_with_its_value(rt: Runtime) -> None:
    parent = rt.launch(RETURNS, returned())
    assert (parent.status, parent.step, parent.waiting_for) == ("waiting", "refund", "agent")
    assert parent.child == f"{parent.id}~{parent.request}"
    child = rt.get(parent.child)
    assert (child.agent, child.step, child.waiting_for) == ("refunds", "check", "approval")
    assert child.parent == parent.id
    # The child's request is decided on the child; its end wakes the parent.
    rt.resume(child.id, approve=True, by="ana", request=child.request)
    woken = rt.get(parent.id)
    assert (woken.status, woken.step, woken.waiting_for) == ("waiting", "await_parcel", "event")
    events = rt.events(parent.id)
    assert [type(e) for e in events].count(ChildStarted) == 1
    ended = [e for e in events if isinstance(e, ChildEnded)]
    assert len(ended) == 1 and ended[0].child == child.id
    assert ended[0].value.refunded is True  # type: ignore[attr-defined]
    first = rt.events(child.id)[0]
    assert isinstance(first, Started) and first.parent == parent.id
    done = rt.send(parent.id, "ParcelReceived", {"order_id": "o-1", "condition": "good"})
    assert (done.status, done.step) == ("finished", "done")


def test_a_rejected_refund_is_still_the_childs_value(rt: Runtime) -> None:
    parent = rt.launch(RETURNS, returned())
    child = rt.get(parent.child or "")
    rt.resume(child.id, reject=True, by="ana", request=child.request)
    events = rt.events(parent.id)
    ended = [e for e in events if isinstance(e, ChildEnded)]
    assert ended[0].value.refunded is False  # type: ignore[attr-defined]


def test_a_cancelled_child_is_the_parent_steps_error(rt: Runtime) -> None:
    parent = rt.launch(RETURNS, returned())
    rt.cancel(parent.child or "", reason="the customer withdrew the return", by="ana")
    after = rt.get(parent.id)
    assert (after.status, after.step) == ("finished", "failed")
    failed = [e for e in rt.events(parent.id) if isinstance(e, ChildFailed)]
    assert len(failed) == 1 and failed[0].error.type == "ChildCancelled"
    assert "withdrew" in failed[0].error.message


def test_a_lost_report_is_delivered_once_by_resume_or_expire(rt: Runtime) -> None:
    parent = rt.launch(RETURNS, returned())
    child_id = parent.child or ""
    child = rt.get(child_id)
    # The approval is recorded but the child is not run: as if the process died before.
    rt.resume(child_id, approve=True, by="ana", request=child.request, run=False)
    rt.resume(child_id)  # the child runs to its end and reports
    rt.resume(parent.id)  # looking again delivers nothing twice
    rt.expire()
    events = rt.events(parent.id)
    assert sum(isinstance(e, ChildEnded) for e in events) == 1
    assert rt.get(parent.id).step == "await_parcel"


def test_a_report_lost_to_a_crash_is_delivered_by_the_sweep(rt: Runtime) -> None:
    parent = rt.launch(RETURNS, returned())
    child_id = parent.child or ""
    child = rt.get(child_id)
    # The child ends, but its report to the parent is lost (the process died between).
    rt.aio._inline.add(child_id)
    rt.resume(child_id, approve=True, by="ana", request=child.request)
    rt.aio._inline.discard(child_id)
    assert rt.get(parent.id).step == "refund"
    rt.expire()
    rt.expire()
    assert rt.get(parent.id).step == "await_parcel"
    assert sum(isinstance(e, ChildEnded) for e in rt.events(parent.id)) == 1


def test_an_enterprise_refund_needs_a_support_lead_first(rt: Runtime) -> None:
    parent = rt.launch(RETURNS, returned("bo@enterprise.example"))
    assert (parent.step, parent.waiting_for) == ("approve_refund", "approval")
    assert parent.child is None


def test_a_child_never_started_before_a_crash_is_started_once_by_the_sweep(rt: Runtime) -> None:
    hook, rt.aio.engine.children = rt.aio.engine.children, None
    parent = rt.launch(RETURNS, returned())  # stops at `refund` as if it died there
    rt.aio.engine.children = hook
    assert (parent.waiting_for, parent.child) == ("agent", None)
    assert rt.threads() and len(rt.threads()) == 1
    rt.expire()
    rt.expire()
    after = rt.get(parent.id)
    assert after.child is not None and len(rt.threads()) == 2
    assert sum(isinstance(e, ChildStarted) for e in rt.events(parent.id)) == 1
    assert rt.get(after.child).waiting_for == "approval"


def test_cancelling_the_parent_cancels_its_child_and_its_request(rt: Runtime) -> None:
    parent = rt.launch(RETURNS, returned())
    child = rt.get(parent.child or "")
    rt.cancel(parent.id, reason="the customer withdrew the return", by="ana")
    assert rt.get(parent.id).status == "cancelled"
    gone = rt.get(child.id)
    assert gone.status == "cancelled"
    (cancelled,) = [e for e in rt.events(child.id) if isinstance(e, Cancelled)]
    assert parent.id in cancelled.reason and "withdrew" in cancelled.reason
    assert cancelled.by == "ana"
    # The child's request is withdrawn: deciding it is refused like any cancelled thread's.
    with pytest.raises(RequestNotPending, match="is cancelled"):
        rt.resume(child.id, approve=True, by="ana", request=child.request)
    assert rt.get(child.id).status == "cancelled"
    assert not [e for e in rt.events(parent.id) if isinstance(e, ChildEnded | ChildFailed)]


def test_cancelling_the_parent_leaves_a_child_that_ended_alone(rt: Runtime) -> None:
    parent = rt.launch(RETURNS, returned())
    child = rt.get(parent.child or "")
    rt.aio._inline.add(child.id)  # the child ends; its report is lost (as if to a crash)
    rt.resume(child.id, approve=True, by="ana", request=child.request)
    rt.aio._inline.discard(child.id)
    rt.cancel(parent.id, reason="closed by hand", by="ana")
    assert rt.get(parent.id).status == "cancelled"
    assert rt.get(child.id).status == "finished"
    assert not [e for e in rt.events(child.id) if isinstance(e, Cancelled)]


def test_a_fork_of_a_child_thread_is_a_thread_of_its_own(rt: Runtime) -> None:
    """Forking a child gives a standalone thread: it names no parent (its end reaches
    nobody), and deciding it leaves the parent waiting on its own child."""
    parent = rt.launch(RETURNS, returned())
    child = rt.get(parent.child or "")
    fork = rt.get(rt.fork(child.id, child.seq))
    assert (fork.parent, child.parent) == (None, parent.id)
    assert fork.waiting_for == "approval" and fork.request is not None
    done = rt.resume(fork.id, approve=True, by="ana", request=fork.request)
    assert done.status == "finished"
    after = rt.get(parent.id)
    assert (after.step, after.waiting_for, after.child) == ("refund", "agent", child.id)


OUTER = """
agent outer "Takes a return through the returns agent." {
  input ReturnRequest
  start take
}

type ReturnRequest "A customer asks to return an order." {
  order_id: string
  email: string
  amount_cents: int
}

type ParcelReceived "The warehouse scanned the returned parcel." {
  order_id: string
  condition: "good" | "damaged"
}

agent take(ReturnRequest) -> ParcelReceived = "returns.agent" {
  next done
  on error -> failed
}

final done(ParcelReceived)
final failed
"""


def test_cancelling_a_grandparent_cancels_the_whole_line(rt: Runtime, tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(RETURNS, folder / "returns.agent")
    shutil.copytree(EXAMPLES / "returns", folder / "returns")
    (folder / "outer.agent").write_text(OUTER)
    top = rt.launch(folder / "outer.agent", returned())
    middle = rt.get(top.child or "")
    assert middle.waiting_for == "agent"
    bottom = rt.get(middle.child or "")
    assert bottom.waiting_for == "approval"
    rt.cancel(top.id, reason="fraud", by="ana", via="cli")
    assert [rt.get(t).status for t in (top.id, middle.id, bottom.id)] == ["cancelled"] * 3
    (last,) = [e for e in rt.events(bottom.id) if isinstance(e, Cancelled)]
    assert middle.id in last.reason and "fraud" in last.reason and last.via == "cli"


def test_a_child_another_process_held_is_cancelled_when_next_looked_at(rt: Runtime) -> None:
    parent = rt.launch(RETURNS, returned())
    child = rt.get(parent.child or "")
    store = rt.aio.engine.store
    held = store.acquire(child.id, "another-process", 60)  # it runs the child just now
    rt.cancel(parent.id, reason="withdrawn", by="ana")
    assert (rt.get(parent.id).status, rt.get(child.id).status) == ("cancelled", "waiting")
    store.release(held)
    # The child's run stops (there: its `resume`, the sweep; here the same call), and the
    # parent's cancel catches up with it.
    assert rt.resume(child.id).status == "cancelled"
    assert rt.get(child.id).status == "cancelled"
    (cancelled,) = [e for e in rt.events(child.id) if isinstance(e, Cancelled)]
    assert parent.id in cancelled.reason and "withdrawn" in cancelled.reason
    assert cancelled.by == "ana"


def test_a_failed_child_the_parent_moved_on_from_cannot_be_retried(rt: Runtime) -> None:
    """A red-team finding: the child's failure was the parent step's error and the parent
    went on; a retry of the child ran the payment again and its result reached nobody."""
    parent = rt.launch(RETURNS, {"order_id": "o-1", "email": "a@example.com", "amount_cents": 0})
    child = rt.get(parent.child or "")
    failed_child = rt.resume(child.id, approve=True, by="ana", request=child.request)
    assert failed_child.status == "failed"
    assert rt.get(parent.id).status != "waiting"  # the parent took the failure
    before = len(rt.events(child.id))
    with pytest.raises(ChildSettled, match="no longer waits"):
        rt.retry(child.id, by="ana")
    assert len(rt.events(child.id)) == before  # nothing recorded


def test_a_child_a_crash_left_running_is_run_on_by_the_sweep(rt: Runtime) -> None:
    """A red-team finding: a child left `running` (here: its approval recorded, the
    process gone before it ran) was never picked up by `expire`; only `resume CHILD` did."""
    parent = rt.launch(RETURNS, returned())
    child_id = parent.child or ""
    child = rt.get(child_id)
    rt.resume(child_id, approve=True, by="ana", request=child.request, run=False)
    assert rt.get(child_id).status == "running"
    rt.expire()
    assert rt.get(child_id).status == "finished"
    assert rt.get(parent.id).step == "await_parcel"
    rt.expire()
    assert sum(isinstance(e, ChildEnded) for e in rt.events(parent.id)) == 1


def test_a_sweep_without_run_leaves_a_stalled_child_to_its_caller(rt: Runtime) -> None:
    """`expire(run=False)` (the server's sweep) records what is due and runs nothing: a
    child a crash left running is named for the caller to run, not run by the sweep."""
    parent = rt.launch(RETURNS, returned())
    child_id = parent.child or ""
    child = rt.get(child_id)
    rt.resume(child_id, approve=True, by="ana", request=child.request, run=False)
    before = len(rt.events(child_id))
    (swept,) = rt._run(rt.aio.expire(run=False))
    assert swept.thread_id == child_id and swept.event is None
    assert swept.view is not None and swept.view.status == "running"
    assert len(rt.events(child_id)) == before  # not run
    assert rt.get(parent.id).step == "refund"
    rt.resume(child_id)  # what the caller does with it: the child runs and reports
    assert rt.get(parent.id).step == "await_parcel"


def test_a_fork_while_the_child_waits_on_an_approval_gets_its_own_child(rt: Runtime) -> None:
    """Forking a parent whose child waits for a person: the fork gets its own child
    thread, started from the same value, linked and shown in its view; the two families
    are decided apart, and the original's child is not counted in the fork's usage."""
    parent = rt.launch(RETURNS, returned())
    original = rt.get(parent.child or "")
    assert original.waiting_for == "approval"
    fork = rt.get(rt.fork(parent.id, parent.seq))
    assert (fork.waiting_for, fork.child) == ("agent", f"{fork.id}~{fork.request}")
    assert fork.child != original.id
    forks_child = rt.get(fork.child or "")
    assert forks_child.parent == fork.id
    assert len(rt.events(forks_child.id)) == 1  # not run yet: nobody was asked
    links = [e.child for e in rt.events(fork.id) if isinstance(e, ChildStarted)]
    assert links == [original.id, fork.child]  # the original's, then its own
    rt.expire()  # a fork runs only when resumed: the sweep leaves its child alone
    assert len(rt.events(fork.child or "")) == 1
    fork = rt.resume(fork.id)
    forks_child = rt.get(fork.child or "")
    assert forks_child.waiting_for == "approval" and forks_child.request is not None
    assert forks_child.state.notified, "resuming the fork ran its child: people were told"
    # The original's approval moves the original only.
    rt.resume(original.id, approve=True, by="ana", request=original.request)
    assert rt.get(parent.id).step == "await_parcel"
    assert (rt.get(fork.id).step, rt.get(fork.id).waiting_for) == ("refund", "agent")
    rt.resume(forks_child.id, reject=True, by="ana", request=forks_child.request)
    after = rt.get(fork.id)
    assert (after.step, after.waiting_for) == ("await_parcel", "event")
    ended = [e for e in rt.events(fork.id) if isinstance(e, ChildEnded)]
    assert [e.child for e in ended] == [forks_child.id]
    assert ended[0].value.refunded is False  # type: ignore[attr-defined]


def test_a_fork_just_before_the_child_started_gets_its_child_too(rt: Runtime) -> None:
    parent = rt.launch(RETURNS, returned())
    fork = rt.get(rt.fork(parent.id, parent.seq - 1))  # the last event is the link
    assert fork.child == f"{fork.id}~{fork.request}"
    assert rt.get(fork.child or "").parent == fork.id
    assert [type(e) for e in rt.events(fork.id)].count(ChildStarted) == 1


OUTER = """
agent outer { input ReturnRequest start go }
type ReturnRequest { order_id: string  email: string  amount_cents: int }
type ParcelReceived { order_id: string  condition: "good" | "damaged" }
agent go(ReturnRequest) -> ParcelReceived = "returns.agent" { next done  on error -> failed }
final done(ParcelReceived)
final failed
"""


def test_the_sweep_leaves_a_forks_child_alone_until_the_fork_is_resumed(
    rt: Runtime, tmp_path: Path
) -> None:
    """A child that starts with a tool is `running` from its first event, like one a crash
    stopped: the sweep must still not run the one a fork was given (a fork does not run
    until a person resumes it)."""
    shutil.copy(RETURNS, tmp_path / "returns.agent")
    shutil.copytree(EXAMPLES / "returns", tmp_path / "returns")
    (tmp_path / "outer.agent").write_text(OUTER)
    parent = rt.launch(tmp_path / "outer.agent", returned())
    assert rt.get(parent.child or "").step == "refund"  # the child ran on to its own child
    fork = rt.get(rt.fork(parent.id, parent.seq))
    forks_child = rt.get(fork.child or "")
    assert (forks_child.status, forks_child.step) == ("running", "lookup")
    rt.expire()
    rt.expire()
    assert len(rt.events(forks_child.id)) == 1, "the sweep ran the fork's child"
    rt.resume(fork.id)
    assert rt.get(forks_child.id).step == "refund"  # resumed: the fork's child ran


def test_a_fork_of_a_parent_inside_the_sub_agent_an_approval_let_run_asks_again(
    rt: Runtime,
) -> None:
    # A support lead's approval lets the parent run one refund child. A fork of the parent
    # while that child waits (or after it failed) gets no child of its own on the strength
    # of the parent's approval: it waits at the approval for a decision of its own.
    parent = rt.launch(RETURNS, returned("bo@enterprise.example"))
    moved = rt.resume(parent.id, approve=True, by="ana", request=parent.request)
    assert (moved.step, moved.waiting_for) == ("refund", "agent") and moved.child is not None
    fork = rt.get(rt.fork(parent.id, moved.seq))
    assert (fork.step, fork.waiting_for) == ("approve_refund", "approval")
    assert fork.request not in (None, parent.request) and fork.child is None
    assert not any(isinstance(e, ChildStarted) for e in rt.events(fork.id))
    assert len(rt.threads()) == 3  # the parent, its child and the fork: no child of the fork
