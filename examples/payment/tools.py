"""payment's tools.

They stand in for a payment provider and a mail system: an invoice id is derived from the
order and the runtime's idempotency key (the same call twice is the same invoice), and a
sent note is recorded in PAYMENT_OUTBOX when that is set, keyed by the idempotency key, so
a note sent twice is visible.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol


class OrderLike(Protocol):
    order_id: str
    amount_cents: int


class NoteLike(Protocol):
    text: str


def create_invoice(order: OrderLike, idempotency_key: str) -> dict[str, object]:
    """An invoice for the order (`Invoice`); refuses a non-positive amount."""
    if order.amount_cents <= 0:
        raise ValueError("an invoice needs a positive amount")
    return {
        "invoice_id": f"inv-{idempotency_key[:12]}",
        "order_id": order.order_id,
        "amount_cents": order.amount_cents,
    }


def send_note(note: NoteLike, idempotency_key: str) -> dict[str, str]:
    """Send the note; the same key twice is the same message."""
    outbox = os.environ.get("PAYMENT_OUTBOX")
    if outbox:
        path = Path(outbox)
        sent = set()
        if path.exists():
            sent = {json.loads(line)["key"] for line in path.read_text().splitlines()}
        if idempotency_key not in sent:
            with path.open("a") as file:
                file.write(json.dumps({"key": idempotency_key, "text": note.text}) + "\n")
    return {"message_id": f"msg-{idempotency_key[:12]}"}
