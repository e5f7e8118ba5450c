"""Issue 8's property over decisions: no sequence of decisions (current, stale, redelivered,
unnamed), forks, tool starts and results, failures, retries and cancellations makes the
approval-gated tool start without an `approved` naming the exact request that was
pending, in the same log, and not carried over a fork without a person's retry.

The logs are folded through the refund agent's generated reducer and forked by the
runtime's own `fork_log`; nothing runs a model or a tool (the property is about the log).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_decisions import REFUNDS_AGENT
from twelvefold.runtime.api import fork_log
from twelvefold.runtime.loading import load_agent
from twelvefold.runtime.loop import INTERRUPTED, Agent, Thread
from twelvefold.runtime.types import (
    Approved,
    CallTool,
    Cancelled,
    Event,
    Forked,
    IllegalEvent,
    ModelOutput,
    Notified,
    Rejected,
    Retried,
    Started,
    State,
    StepFailed,
    ToolResult,
    ToolStarted,
)

GATED = "refund"
KINDS = [
    "model", "notify", "approve", "reject", "start", "result", "fail", "retry", "fork", "cancel",
]  # fmt: skip


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Agent:
    folder = tmp_path_factory.mktemp("refunds")
    (folder / "prompts" / "refunds").mkdir(parents=True)
    (folder / "prompts" / "refunds" / "decide.j2").write_text("{{ context }}\n")
    path = folder / "refunds.agent"
    path.write_text(REFUNDS_AGENT)
    return load_agent(path, cache_dir=folder / "cache")


operations = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(min_value=0, max_value=1000)),
    min_size=10,
    max_size=60,
)


def next_event(agent: Agent, log: list[Event], state: State, kind: str, n: int) -> Event | None:
    """The event an operation appends to a thread in `state`, or None when it cannot apply
    (decisions are made whatever the state: the reducer must refuse the wrong ones)."""
    module, step = agent.module, state.step
    seen = [e.request for e in log if isinstance(e, Approved | Rejected)] + [
        f"approve_refund-{i}" for i in range(1, len(log) + 2)
    ]
    match kind:
        case "model" if state.status == "running" and step == "decide":
            if n % 4 == 0:
                return ModelOutput(step=step, output=module.AGENT.types["Done"](message="ok"))
            refund = module.AGENT.types["IssueRefund"](order=f"o{n % 3}", amount=float(n))
            return ModelOutput(step=step, output=refund)
        case "notify" if state.status == "waiting" and not state.notified:
            return Notified(step=step, channels=("log",))
        case "approve" | "reject":
            # Mostly the pending request; else none, or one seen before (stale or made up).
            request = [state.request, state.request, None, seen[n % len(seen)]][n % 4]
            decided = Approved if kind == "approve" else Rejected
            return decided(step=step, request=request, by="carol")
        case "start" if state.status == "running" and state.tool_key is None:
            if isinstance(module.next_action(state), CallTool):
                return ToolStarted(step=step, key=f"k{len(log) + 1}")
        case "result" if state.status == "running" and state.tool_key is not None:
            receipt = module.AGENT.types["Receipt"](order="o", amount=1.0)
            return ToolResult(step=step, result=receipt)
        case "fail" if state.status == "running" and state.tool_key is not None:
            return StepFailed(step=step, error=INTERRUPTED, key=state.tool_key)
        case "retry" if state.status == "failed":
            return Retried(step=step, by="ops")
        case "cancel" if n % 5 == 0:
            return Cancelled(step=step, by="ops", reason="test")
    return None


def check_gated_starts(agent: Agent, log: list[Event]) -> None:
    """Every start of the gated tool follows an `approved` of the request pending when it
    was given, with no fork in between unless a person retried after it."""
    state = agent.module.replay(log[:1])
    entered_by: Event | None = None
    forked_since = False
    for event in log[1:]:
        before = state
        state = agent.module.reduce(state, event)
        if isinstance(event, Forked):
            forked_since = True
        elif isinstance(event, Retried):
            forked_since = False
        if state.step == GATED and before.step != GATED:
            assert isinstance(event, Approved), f"{event} moved the thread into `{GATED}`"
            assert event.request is not None and event.request == before.request
            entered_by, forked_since = event, False
        if isinstance(event, ToolStarted) and event.step == GATED:
            assert entered_by is not None, "the gated tool started without an approval"
            assert not forked_since, "a fork carried an approval into a new tool start"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_no_gated_tool_starts_without_an_approval_of_that_exact_request(
    agent: Agent, ops: list[tuple[str, int]]
) -> None:
    module = agent.module
    logs: list[list[Event]] = [[Started(step="decide", input="refund my orders")]]
    for kind, n in ops:
        # Mostly the newest thread, and mostly forks at the end of a log: the interesting
        # cases (a fork right after a decision, then work on the fork) stay likely.
        number = n % len(logs) if n % 3 == 0 else len(logs) - 1
        log = logs[number]
        state = module.replay(log)
        if kind == "fork":
            parent = Thread(f"t{number}", agent, list(log), state)
            logs.append(fork_log(parent, len(log) if n % 2 else 1 + n % len(log)))
            module.replay(logs[-1])  # a fork's log is always one the reducer takes
            continue
        event = next_event(agent, log, state, kind, n)
        if event is None:
            continue
        try:
            module.reduce(state, event)
        except IllegalEvent:
            if isinstance(event, Approved | Rejected):
                # Refused exactly when it names anything but the pending request, or the
                # thread is not waiting at an approval.
                assert (
                    event.request != state.request
                    or state.step != "approve_refund"
                    or (state.status != "waiting")
                )
            continue
        if isinstance(event, Approved | Rejected):
            assert state.status == "waiting" and event.request == state.request
        log.append(event)
    for log in logs:
        check_gated_starts(agent, log)


def test_the_property_catches_a_fork_that_keeps_an_approval(agent: Agent, tmp_path: Path) -> None:
    """The check itself can fail: a log forked right after an approval, without the cut
    back to the approval, starts the tool on the parent's decision."""
    module = agent.module
    refund = module.AGENT.types["IssueRefund"](order="B2", amount=5000.0)
    log: list[Event] = [
        Started(step="decide", input="refund"),
        ModelOutput(step="decide", output=refund),
        Notified(step="approve_refund"),
    ]
    log.append(Approved(step="approve_refund", request="approve_refund-2", by="carol"))
    kept = [
        *log,
        Forked(step="refund", parent="t0", parent_seq=4),
        ToolStarted(step="refund", key="k"),
    ]
    with pytest.raises(AssertionError, match="carried an approval"):
        check_gated_starts(agent, kept)
    forked = fork_log(Thread("t0", agent, log, module.replay(log)), len(log))
    assert not any(isinstance(e, Approved) for e in forked)
    assert module.replay(forked).status == "waiting"
