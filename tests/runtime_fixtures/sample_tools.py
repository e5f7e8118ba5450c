"""Tools for the runtime's unit tests of tools.py."""

from __future__ import annotations

import asyncio
import threading
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


barrier = threading.Event()
"""What the blocking tools wait for; a test sets it (and clears it before the next)."""
inside: list[str] = []
"""Keys of the blocking tools' attempts running right now."""
most_inside: list[int] = [0]
"""The most attempts of one key that ever ran at once."""


def _block(key: str) -> None:
    inside.append(key)
    most_inside[0] = max(most_inside[0], inside.count(key))
    try:
        barrier.wait()
    finally:
        inside.remove(key)


def slow(value: Any) -> dict[str, Any]:
    calls.append(("slow",))
    _block("slow")
    return {"n": value.n}


def slow_keyed(value: Any, idempotency_key: str) -> dict[str, Any]:
    calls.append(("slow_keyed", idempotency_key))
    _block(idempotency_key)
    return {"n": value.n}


def exits(value: Any) -> dict[str, Any]:
    calls.append(("exits",))
    raise SystemExit(3)


async def async_exits(value: Any) -> dict[str, Any]:
    calls.append(("async_exits",))
    raise SystemExit(4)


def generator_exit(value: Any) -> dict[str, Any]:
    raise GeneratorExit("closed")


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def unprintable(value: Any) -> dict[str, Any]:
    raise Unprintable()


async def async_tool(value: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"n": value.n * 2}


def wrong_shape(value: Any) -> dict[str, Any]:
    calls.append(("wrong_shape",))
    return {"count": "many"}


def not_a_model(value: Any) -> int:
    return 3


def interrupts(value: Any) -> dict[str, Any]:
    calls.append(("interrupts",))
    raise KeyboardInterrupt


async def hangs_once(value: Any, idempotency_key: str) -> dict[str, Any]:
    """Never returns on its first call (until cancelled); returns on the next."""
    calls.append(("hangs_once", idempotency_key))
    if len(calls) == 1:
        await asyncio.Event().wait()
    return {"n": value.n}


async def hangs_once_keyless(value: Any) -> dict[str, Any]:
    calls.append(("hangs_once_keyless",))
    if len(calls) == 1:
        await asyncio.Event().wait()
    return {"n": value.n}
