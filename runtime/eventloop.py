"""The event loops twelvefold makes itself: uvloop's when it is installed.

`Runtime` (the synchronous front door, so `twelvefold run` and `resume`) and `twelvefold
worker` run their threads on a loop of their own; `twelvefold serve` runs on uvicorn's,
which already picks uvloop when it is installed. uvloop is a dependency on the platforms
it supports (CPython, not Windows); its loop is asyncio's interface implemented on libuv,
and spends less CPU per socket event and per callback than asyncio's own, which is most of
what a process with many threads waiting on a model does besides the model client
(docs/benchmarks.md, issue 13, "Many threads at once"). Where it is not installed, the
loop is asyncio's, and nothing else changes.

This module is imported only when a loop is made, so importing the runtime loads neither
asyncio nor uvloop (tests/test_runtime_imports.py).
"""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when the `uvloop` package imports, else asyncio's
    (`asyncio.new_event_loop()`). Not set as the thread's current loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


YOUNG_COLLECTION_EVERY = 10_000
"""Allocations (net of frees) between two collections of the garbage collector's youngest
generation in `twelvefold serve` and `worker` (Python's default is 700)."""


def collect_less_often() -> None:
    """Raises the garbage collector's first threshold (`gc.set_threshold`) to
    `YOUNG_COLLECTION_EVERY`, keeping the other two; never lowers it.

    For the processes twelvefold owns that hold many threads at once (`serve`, `worker`):
    each model call allocates a few thousand short-lived objects (request, headers, reply),
    so at 700 the collector ran several young collections per call, and every tenth an
    older one over the threads' waiting state. At 10,000 a model call costs 8–11% less CPU
    with 100 and 1,000 threads waiting (the same as with the collector off), and at most
    10,000 objects in cycles wait longer to be freed (docs/benchmarks.md, issue 13).
    `Runtime` and `AsyncRuntime` never call it: a library leaves its host's collector be."""
    import gc

    first, second, third = gc.get_threshold()
    gc.set_threshold(max(first, YOUNG_COLLECTION_EVERY), second, third)
