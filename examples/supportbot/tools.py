"""supportbot's tools.

They stand in for a CRM and a mail system: the accounts are a fixed table (or the JSON
object in SUPPORTBOT_ACCOUNTS, `{"id": {"name": ..., "tier": ...}}`), and a sent reply is
recorded in SUPPORTBOT_OUTBOX when that is set, keyed by the runtime's idempotency key, so a
reply sent twice is visible.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

ACCOUNTS = {
    "acme": {"name": "Acme Corp", "tier": "enterprise"},
    "bob": {"name": "Bob's Bikes", "tier": "free"},
}


class TicketLike(Protocol):
    customer_id: str


class ReplyLike(Protocol):
    text: str


def lookup_customer(ticket: TicketLike) -> dict[str, str]:
    """The ticket's customer (`Customer`), or `UnknownCustomer` for an id nobody has."""
    configured = os.environ.get("SUPPORTBOT_ACCOUNTS")
    accounts = json.loads(configured) if configured else ACCOUNTS
    account = accounts.get(ticket.customer_id)
    if account is None:
        return {"customer_id": ticket.customer_id}
    return {"customer_id": ticket.customer_id, "name": account["name"], "tier": account["tier"]}


def send_reply(reply: ReplyLike, idempotency_key: str) -> dict[str, str]:
    """Send the reply; the same key twice is the same message."""
    outbox = os.environ.get("SUPPORTBOT_OUTBOX")
    if outbox:
        path = Path(outbox)
        sent = set()
        if path.exists():
            sent = {json.loads(line)["key"] for line in path.read_text().splitlines()}
        if idempotency_key not in sent:
            with path.open("a") as file:
                file.write(json.dumps({"key": idempotency_key, "text": reply.text}) + "\n")
    return {"message_id": f"msg-{idempotency_key[:12]}"}
