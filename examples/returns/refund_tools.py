"""refunds' tools: stand-ins for a payment provider (the same key is the same refund)."""

from __future__ import annotations

from typing import Protocol


class RefundLike(Protocol):
    order_id: str
    amount_cents: int


def pay_refund(request: RefundLike, idempotency_key: str) -> dict[str, object]:
    """Pay the refund out (`RefundOutcome`); refuses a non-positive amount."""
    if request.amount_cents <= 0:
        raise ValueError("a refund needs a positive amount")
    return {"refunded": True, "reference": f"re-{idempotency_key[:12]}"}


def refuse_refund(request: RefundLike, idempotency_key: str) -> dict[str, object]:
    """Record that finance refused the refund (the same key is the same record)."""
    return {"refunded": False, "reference": f"refused: order {request.order_id}"}
