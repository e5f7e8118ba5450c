"""patience.agent's one tool."""

from __future__ import annotations

from typing import Protocol


class Change(Protocol):
    what: str


def apply(change: Change) -> dict[str, str]:
    return {"message": f"applied: {change.what}"}
