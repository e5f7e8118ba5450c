"""Tools for the runtime's unit tests of tools.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

calls: list[Any] = []


def keyed(value: Any, idempotency_key: str) -> dict[str, Any]:
    calls.append(("keyed", idempotency_key))
    return {"n": value.n + 1}


def no_input() -> dict[str, Any]:
    calls.append(("no_input",))
    return {"n": 0}


def flaky(value: Any) -> dict[str, Any]:
    calls.append(("flaky", time.monotonic()))
    if len([c for c in calls if c[0] == "flaky"]) < 3:
        raise ConnectionError("cluster\n   unreachable")
    return {"n": value.n}


def always_fails(value: Any) -> dict[str, Any]:
    raise LookupError(f"no tag {value.n!r}")


def slow(value: Any) -> dict[str, Any]:
    time.sleep(2)
    return {"n": value.n}


async def async_tool(value: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"n": value.n * 2}


def wrong_shape(value: Any) -> dict[str, Any]:
    return {"count": "many"}


def not_a_model(value: Any) -> int:
    return 3
