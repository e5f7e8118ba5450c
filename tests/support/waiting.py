"""Waiting for something another process does, without timing it."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], bool], what: str, limit: float = 90.0) -> None:
    """Poll until `condition` holds. Not a timed assertion: the limit only stops a broken
    build from hanging the suite."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)
