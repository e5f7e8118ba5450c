"""Outside events and durable timers in the runtime: crash safety of a delivery with real
processes and a real SQLite file, and the `send` command.

1. Senders deliver `PaymentReceived` to eight waiting payment threads, each with its own
   idempotency key, and are SIGKILLed after a growing number of appends; each new sender
   delivers every event again with the same keys (what a webhook does after a lost reply).
   Afterwards every thread holds exactly one delivery (none lost, none duplicated) and
   every append a sender saw acknowledged is in the log. Against a store that commits
   lazily the same run finds lost appends.
2. `twelvefold send`: a wrong type or shape is one line on stderr and exit 1, nothing
   recorded; a delivery prints where the thread went; a duplicate key is dropped.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from click.testing import CliRunner

from tests.runtime_helpers import EXAMPLES, ScriptedModel, no_messages
from tests.support.kills import run_and_kill
from tests.test_runtime_crash import LazyCommitStore
from twelvefold.cli import cli
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.lease import LeaseHeld
from twelvefold.runtime.loop import Thread
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.types import Event, Signalled

PAYMENT = EXAMPLES / "payment.agent"
THREADS = 8
LEASE = 0.5


def order(n: int) -> dict[str, object]:
    return {"order_id": f"o-{n}", "email": "ana@example.com", "amount_cents": 100 + n}


def paid(n: int) -> dict[str, object]:
    return {"invoice_id": f"inv-{n}", "amount_cents": 100 + n, "reference": f"pay-{n}"}


def sender(
    store_class: type[SqliteStore], db: Path, cache: Path, ids: list[str], acks: int
) -> None:
    def acknowledge(thread: Thread, event: Event) -> None:
        os.write(acks, f"{thread.id} {len(thread.events)}\n".encode())

    store = store_class(db)
    rt = Runtime(
        store, model=ScriptedModel([]), messages=no_messages, cache_dir=cache,
        on_event=acknowledge, lease_seconds=LEASE,
    )  # fmt: skip
    for n, thread_id in enumerate(ids):
        while True:
            try:
                rt.send(thread_id, "PaymentReceived", paid(n), idempotency_key=f"evt-{n}")
                break
            except LeaseHeld:  # a killed sender's lease: wait until it lapses
                while store.lease(thread_id) is not None:
                    time.sleep(0.02)
    store.close()
    os._exit(0)


def deliver_under_kills(store_class: type[SqliteStore], tmp_path: Path) -> list[str]:
    db, cache = tmp_path / "threads.db", tmp_path / "cache"
    setup = SqliteStore(db)
    with Runtime(setup, model=ScriptedModel([]), messages=no_messages, cache_dir=cache) as rt:
        ids = [rt.launch(PAYMENT, order(n)).id for n in range(THREADS)]
        assert all(rt.get(i).step == "await_payment" for i in ids)
    setup.close()

    acknowledged: set[tuple[str, int]] = set()
    for kill_after in [*range(1, THREADS * 2, 3), None]:
        acknowledged |= run_and_kill(sender, (store_class, db, cache, ids), kill_after)

    problems = []
    check = SqliteStore(db)
    with Runtime(check, model=ScriptedModel([]), messages=no_messages, cache_dir=cache) as rt:
        for n, thread_id in enumerate(ids):
            events = rt.events(thread_id)
            keys = [e.key for e in events if isinstance(e, Signalled)]
            if keys != [f"evt-{n}"]:
                problems.append(f"{thread_id}: deliveries {keys}")
            lost = [c for t, c in acknowledged if t == thread_id and c > len(events)]
            if lost:
                problems.append(f"{thread_id}: acknowledged appends {lost} are missing")
            if rt.get(thread_id).step != "cool_off":
                problems.append(f"{thread_id}: at {rt.get(thread_id).step}")
    check.close()
    return problems


def test_a_delivery_survives_sigkill_once_and_only_once(tmp_path: Path) -> None:
    assert deliver_under_kills(SqliteStore, tmp_path) == []


def test_the_delivery_check_finds_a_store_that_loses_appends(tmp_path: Path) -> None:
    problems = deliver_under_kills(LazyCommitStore, tmp_path)
    assert any("missing" in p or "deliveries []" in p for p in problems), problems


# ---- 2. twelvefold send -----------------------------------------------------------------


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_send_delivers_refuses_and_drops_duplicates(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    code, out, _ = invoke(
        "run", str(PAYMENT), "--input", json.dumps(order(1)), "--db", db, "--json"
    )
    assert code == 0, out
    view = json.loads(out.splitlines()[-1])
    assert (view["waiting_for"], view["event_type"]) == ("event", "PaymentReceived")
    thread = view["thread_id"]

    for args, message in [
        (["Refund", "{}"], "error: payment declares no type `Refund`"),
        (["PaymentReceived", '{"amount_cents": "lots"}'], "error: the event is not a valid"),
        (["Order", json.dumps(order(1))], "waits at `await_payment` for PaymentReceived"),
        (["PaymentReceived", json.dumps(paid(1)), "--request", "nope"], "no longer pending"),
    ]:
        code, out, err = invoke("send", thread, *args, "--db", db)
        assert code == 1 and message in err and "Traceback" not in err, err
    _, shown, _ = invoke("show", thread, "--db", db, "--json")
    assert json.loads(shown)["events"] == view["events"], "a refused event leaves no trace"

    sent = ["send", thread, "PaymentReceived", json.dumps(paid(1)), "--idempotency-key", "k"]
    code, out, _ = invoke(*sent, "--db", db, "--json")
    after = json.loads(out.splitlines()[-1])
    assert code == 0 and (after["step"], after["waiting_for"]) == ("cool_off", "timer")
    assert after["wake_at"] is not None
    code, out, _ = invoke(*sent, "--db", db, "--json")
    assert code == 0 and json.loads(out.splitlines()[-1])["events"] == after["events"]
