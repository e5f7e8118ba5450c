"""The refunds agent's validator and tool (tests/test_e2e_checks.py)."""

from __future__ import annotations

import os
from typing import Any


def refund_is_sane(output: Any) -> str | None:
    """Refuse a refund that is not positive, or that comes without a note."""
    if output.amount <= 0:
        return f"a refund must be positive, not {output.amount}"
    if not output.note.strip():
        raise ValueError("say why the refund is given (the note is empty)")
    return None


def pay(refund: Any) -> dict[str, str]:
    """Record the payment in REFUNDS_PAID (one line per payment) and return its receipt."""
    paid = os.environ.get("REFUNDS_PAID")
    if paid:
        with open(paid, "a", encoding="utf-8") as out:
            out.write(f"{refund.amount}\n")
    return {"id": f"r-{refund.amount}"}


def charge(claim: Any) -> dict[str, str]:
    """Charge with the claim's key (the tool gets the real value) and return a token."""
    assert claim.api_key.startswith("sk-"), "the tool is given the secret itself"
    if claim.order.startswith("refuse"):  # a provider's refusal that quotes the key
        raise ValueError(f"provider refused key {claim.api_key} for order {claim.order}")
    return {"id": f"c-{claim.order}", "token": f"tok-for-{claim.api_key}"}
