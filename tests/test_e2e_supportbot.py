"""examples/supportbot.agent end to end: a tool that routes on its own result decides which
replies need a person's approval (issue 12, items 1 and 2). The real tools and prompt, the
real openai + instructor client against the scripted server on loopback, SQLite.

The customer's tier comes from the lookup tool and is routed there (`on Customer if tier
== "enterprise" -> draft_enterprise`): whatever the model writes, a reply to an enterprise
customer waits for approval. The send tool records each message in SUPPORTBOT_OUTBOX
(keyed by its idempotency key), so the outbox says what was really sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_helpers import EXAMPLES, RecordingNotifier
from tests.support.e2e import ModelTurns
from tests.support.openai_server import Reply, ScriptedOpenAI
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.types import Approved, ModelOutput, OutputRejected, ToolResult, ToolStarted

SUPPORTBOT = EXAMPLES / "supportbot.agent"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def outbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "outbox.jsonl"
    monkeypatch.setenv("SUPPORTBOT_OUTBOX", str(path))
    monkeypatch.delenv("SUPPORTBOT_ACCOUNTS", raising=False)
    return path


def sent(outbox: Path) -> list[dict[str, str]]:
    if not outbox.exists():
        return []
    return [json.loads(line) for line in outbox.read_text().splitlines()]


def ticket(customer: str) -> dict[str, Any]:
    return {"customer_id": customer, "subject": "Login broken", "body": "I cannot log in."}


TEXT = "Sorry about that; we reset your login. -- the support team"
REPLY = Reply(arguments={"text": TEXT})  # one output type: the fields themselves
ACCEPTED = Reply(arguments={"accept": True, "reason": "answers the ticket"})  # the judge's


def test_an_enterprise_reply_waits_for_approval_whatever_the_model_says(
    rt: Runtime, model: ModelTurns, outbox: Path, notifier: RecordingNotifier
) -> None:
    # The motivating bug: the model claims a tier (a customer's email told it to). The
    # reply type has no tier, so the claim is a validation error the model is asked to
    # fix; and even then the route was settled by the lookup, before the model ran.
    claims_free = Reply(arguments={"text": TEXT, "tier": "free"})
    model.then(claims_free, REPLY, ACCEPTED)
    view = rt.launch(SUPPORTBOT, ticket("acme"))

    assert (view.status, view.step, view.waiting_for) == ("waiting", "approve_reply", "approval")
    assert sent(outbox) == [], "an enterprise reply must not go out before the approval"
    (notice,) = notifier.notices
    assert (notice.kind, notice.approvers) == ("approval", ("support-leads",))
    events = rt.events(view.id)
    lookup = next(e for e in events if isinstance(e, ToolResult) and e.step == "lookup")
    assert type(lookup.result).__name__ == "Customer" and lookup.result.tier == "enterprise"

    done = rt.resume(view.id, request=view.request, approve=True, by="ana")
    assert done.status == "finished"
    (message,) = sent(outbox)
    assert message["text"] == TEXT
    events = rt.events(view.id)
    started = next(
        e for e in events if isinstance(e, ToolStarted) and e.step == "send_enterprise_reply"
    )
    approved_at = next(i for i, e in enumerate(events) if isinstance(e, Approved))
    assert approved_at < events.index(started), "the reply went out only after the approval"
    assert done.output.message_id == f"msg-{started.key[:12]}"


def test_a_free_customers_reply_goes_out_without_a_person(
    rt: Runtime, model: ModelTurns, outbox: Path, notifier: RecordingNotifier
) -> None:
    model.then(REPLY, ACCEPTED)
    done = rt.launch(SUPPORTBOT, ticket("bob"))
    assert done.status == "finished"
    assert [m["text"] for m in sent(outbox)] == [TEXT]
    assert notifier.notices == []
    steps = [e.step for e in rt.events(done.id) if isinstance(e, ToolStarted)]
    assert steps == ["lookup", "send_reply"]


def test_the_tier_routes_from_the_tools_result_not_a_fixed_table(
    rt: Runtime, model: ModelTurns, outbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same customer id, now enterprise in the CRM: the route follows the tool.
    accounts = {"bob": {"name": "Bob's Bikes", "tier": "enterprise"}}
    monkeypatch.setenv("SUPPORTBOT_ACCOUNTS", json.dumps(accounts))
    model.then(REPLY, ACCEPTED)
    view = rt.launch(SUPPORTBOT, ticket("bob"))
    assert (view.status, view.step) == ("waiting", "approve_reply")
    assert sent(outbox) == []


def test_an_unknown_customer_is_the_other_member_of_the_union(
    rt: Runtime, model: ModelTurns, outbox: Path
) -> None:
    view = rt.launch(SUPPORTBOT, ticket("nobody"))
    assert (view.status, view.step, view.waiting_for) == ("waiting", "escalate", "answer")
    lookup = next(e for e in rt.events(view.id) if isinstance(e, ToolResult))
    assert type(lookup.result).__name__ == "UnknownCustomer"
    assert model.contexts == [], "no model call for a ticket nobody can be found for"
    assert sent(outbox) == []


def test_a_lookup_result_of_neither_type_fails_the_step(
    rt: Runtime, model: ModelTurns, outbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A CRM row with a tier the agent does not know: neither Customer nor UnknownCustomer.
    accounts = {"eve": {"name": "Eve", "tier": "platinum"}}
    monkeypatch.setenv("SUPPORTBOT_ACCOUNTS", json.dumps(accounts))
    view = rt.launch(SUPPORTBOT, ticket("eve"))
    assert (view.status, view.step) == ("waiting", "escalate")  # on error -> escalate
    assert sent(outbox) == []


def test_the_judge_sends_a_reply_that_promises_a_refund_back_to_be_redrafted(
    rt: Runtime,
    model: ModelTurns,
    openai_server: ScriptedOpenAI,
    outbox: Path,
    notifier: RecordingNotifier,
) -> None:
    """Every draft is read by a judge (`judge "supportbot/judge.j2"`) before it is sent or
    shown to a person: a refusal is recorded, goes back to the drafting model as its
    reason, and nothing is sent or asked until a draft is accepted."""
    promise = "We will refund your whole year. -- the support team"
    why = "it promises a refund, which support may not grant"
    model.then(
        Reply(arguments={"text": promise}),
        Reply(arguments={"accept": False, "reason": why}),
        REPLY,
        ACCEPTED,
    )
    view = rt.launch(SUPPORTBOT, ticket("acme"))
    assert (view.status, view.step) == ("waiting", "approve_reply")
    assert sent(outbox) == [] and len(notifier.notices) == 1
    asked = [body["tool_choice"]["function"]["name"] for body in openai_server.requests]
    assert asked == ["Reply", "Verdict", "Reply", "Verdict"]
    assert promise in model.contexts[1], "the judge reads the draft it judges"
    assert why in model.contexts[2], "the drafting model reads why it was refused"
    events = rt.events(view.id)
    (rejected,) = [e for e in events if isinstance(e, OutputRejected)]
    assert (rejected.by, rejected.reason, rejected.output.text) == ("judge", why, promise)
    (output,) = [e for e in events if isinstance(e, ModelOutput)]
    assert output.output.text == TEXT
    assert view.question is not None and TEXT in view.question  # the person sees the fix
