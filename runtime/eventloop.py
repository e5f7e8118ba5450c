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
