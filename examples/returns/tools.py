"""returns' tools: a stand-in CRM that knows each customer's tier."""

from __future__ import annotations

from typing import Protocol


class ReturnLike(Protocol):
    order_id: str
    email: str
    amount_cents: int


def lookup(request: ReturnLike, idempotency_key: str) -> dict[str, object]:
    """The refund to make, with the customer's tier as the CRM records it (`RefundRequest`):
    addresses at enterprise.example are enterprise customers. A read: taking the key says
    it is safe to run again after a crash."""
    tier = "enterprise" if request.email.endswith("@enterprise.example") else "free"
    return {"order_id": request.order_id, "amount_cents": request.amount_cents, "tier": tier}
