"""examples/payment.agent end to end: a wait for an outside event and a durable timer
(issue 12, items 4 and 5). The real tools and prompt, the real openai + instructor client
against the scripted server on loopback, SQLite.

The thread bills the order, then waits (holding no process) until `send` delivers a
`PaymentReceived`; it then sleeps a 10-minute cool-off that only `expire` ends, and only
once the time has passed; then the model writes the thank-you note and it goes out. A
wait nobody pays within its 2-day timeout goes to `unpaid` when `expire` runs.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_helpers import EXAMPLES, RecordingNotifier
from tests.support.e2e import ModelTurns
from tests.support.openai_server import Reply
from twelvefold.runtime.api import InputError, NotWaiting, RequestNotPending, Runtime
from twelvefold.runtime.timeouts import parse_time
from twelvefold.runtime.types import OutputRejected, Signalled, TimerFired, ToolStarted

PAYMENT = EXAMPLES / "payment.agent"
NOTE = "Thank you for your payment of 12.50! -- the shop"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def outbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "outbox.jsonl"
    monkeypatch.setenv("PAYMENT_OUTBOX", str(path))
    return path


def sent(outbox: Path) -> list[dict[str, str]]:
    if not outbox.exists():
        return []
    return [json.loads(line) for line in outbox.read_text().splitlines()]


def order() -> dict[str, Any]:
    return {"order_id": "o-1", "email": "ana@example.com", "amount_cents": 1250}


def paid(invoice_id: str) -> dict[str, Any]:
    return {"invoice_id": invoice_id, "amount_cents": 1250, "reference": "pay-77"}


def test_a_payment_then_the_cool_off_then_the_thank_you(
    rt: Runtime, model: ModelTurns, outbox: Path, notifier: RecordingNotifier
) -> None:
    view = rt.launch(PAYMENT, order())
    assert (view.status, view.step, view.waiting_for) == ("waiting", "await_payment", "event")
    assert view.event_type == "PaymentReceived" and view.request == "await_payment-3"
    assert notifier.notices == [], "an outside event is awaited, nobody is asked"
    invoice = rt.get(view.id).state.value

    sleeping = rt.send(
        view.id, "PaymentReceived", json.dumps(paid(invoice.invoice_id)),
        request=view.request, idempotency_key="evt-1",
    )  # fmt: skip
    assert (sleeping.status, sleeping.step, sleeping.waiting_for) == (
        "waiting",
        "cool_off",
        "timer",
    )
    assert sleeping.wake_at is not None
    wake = parse_time(sleeping.wake_at)

    # Before the cool-off is over, a sweep leaves the thread alone; the model is not called.
    assert rt.expire(wake - timedelta(seconds=1)) == []
    assert rt.get(view.id).step == "cool_off" and sent(outbox) == []

    model.then(Reply(arguments={"text": NOTE}))
    (woken,) = rt.expire(wake)
    assert isinstance(woken.event, TimerFired) and woken.event.request == sleeping.request
    done = rt.get(view.id)
    assert done.status == "finished"
    assert [m["text"] for m in sent(outbox)] == [NOTE]
    assert "pay-77" in model.contexts[0], "the model sees the payment it thanks for"
    assert rt.expire(wake + timedelta(days=30)) == [], "a finished thread has no timer"


def test_a_note_with_a_link_is_refused_before_it_is_sent(
    rt: Runtime, model: ModelTurns, outbox: Path
) -> None:
    """The check before dispatch (`validate "payment.checks:no_links"`): the model's note
    with a link never reaches the customer; the model is asked again with the reason."""
    view = rt.launch(PAYMENT, order())
    invoice = rt.get(view.id).state.value
    sleeping = rt.send(view.id, "PaymentReceived", paid(invoice.invoice_id), request=view.request)
    assert sleeping.wake_at is not None
    phishing = "Thanks! Confirm your card at https://evil.example/pay -- the shop"
    model.then(Reply(arguments={"text": phishing}), Reply(arguments={"text": NOTE}))
    rt.expire(parse_time(sleeping.wake_at))
    assert rt.get(view.id).status == "finished"
    assert [m["text"] for m in sent(outbox)] == [NOTE]
    (refused,) = [e for e in rt.events(view.id) if isinstance(e, OutputRejected)]
    assert refused.by == "payment.checks:no_links" and "links" in refused.reason
    assert "must not contain links" in model.contexts[1]


def test_a_wait_nobody_pays_times_out_to_unpaid(rt: Runtime, outbox: Path) -> None:
    view = rt.launch(PAYMENT, order())
    assert view.wake_at is not None
    deadline = parse_time(view.wake_at)
    assert rt.expire(deadline - timedelta(minutes=1)) == []
    (expired,) = rt.expire(deadline)
    assert isinstance(expired.event, TimerFired)
    assert (rt.get(view.id).status, rt.get(view.id).step) == ("finished", "unpaid")
    # The payment arrives after the timeout: refused, nothing recorded.
    before = len(rt.events(view.id))
    with pytest.raises(NotWaiting, match="does not wait for an event"):
        rt.send(view.id, "PaymentReceived", paid("inv-x"))
    assert len(rt.events(view.id)) == before
    assert sent(outbox) == []


def test_wrong_events_are_refused_and_recorded_nowhere(rt: Runtime) -> None:
    view = rt.launch(PAYMENT, order())
    log = rt.events(view.id)
    wrong: list[tuple[str, Any, type[Exception], str]] = [
        ("Refund", {}, InputError, "declares no type `Refund`"),
        ("PaymentReceived", {"invoice_id": "i"}, InputError, "amount_cents: Field required"),
        ("PaymentReceived", "{not json", InputError, "not a valid PaymentReceived"),
        ("PaymentReceived", {**paid("i"), "extra": 1}, InputError, "extra"),
        ("Invoice", {"invoice_id": "i", "order_id": "o", "amount_cents": 1}, NotWaiting,
         "waits at `await_payment` for PaymentReceived, not Invoice"),
        ("\x1b[31mX", {}, InputError, r"\\x1b"),  # a terminal escape comes out escaped
    ]  # fmt: skip
    for type_name, value, error, message in wrong:
        with pytest.raises(error, match=message):
            rt.send(view.id, type_name, value)
    with pytest.raises(RequestNotPending, match="no longer pending"):
        rt.send(view.id, "PaymentReceived", paid("i"), request="await_payment-1")
    assert rt.events(view.id) == log, "a refused event leaves no trace"


def test_a_duplicate_delivery_is_dropped(rt: Runtime, model: ModelTurns) -> None:
    view = rt.launch(PAYMENT, order())
    first = rt.send(view.id, "PaymentReceived", paid("i"), idempotency_key="evt-9")
    again = rt.send(view.id, "PaymentReceived", paid("i"), idempotency_key="evt-9")
    assert again.seq == first.seq and again.step == "cool_off"
    signals = [e for e in rt.events(view.id) if isinstance(e, Signalled)]
    assert [s.key for s in signals] == ["evt-9"]
    # Without the key, a second delivery is an event for a thread that no longer waits.
    with pytest.raises(NotWaiting):
        rt.send(view.id, "PaymentReceived", paid("i"))
    started = [e.step for e in rt.events(view.id) if isinstance(e, ToolStarted)]
    assert started == ["bill"]
