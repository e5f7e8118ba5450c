"""Run a worker process and SIGKILL it after it acknowledged a number of appends (the
crash tests: tests/test_runtime_waits.py, tests/test_runtime_subagents_crash.py)."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from typing import Any

FORK = multiprocessing.get_context("fork")


def run_and_kill(
    target: Callable[..., None], args: tuple[Any, ...], kill_after: int | None
) -> set[tuple[str, int]]:
    """Start `target(*args, acks)` in a forked process, where `acks` is a pipe's write end
    on which it writes `THREAD COUNT` after each append; SIGKILL it once `kill_after`
    appends were acknowledged (never, with None). Returns the (thread, count) pairs it
    acknowledged. Fails when the process does not end within 60 s after that."""
    acknowledged: set[tuple[str, int]] = set()
    read, write = os.pipe()
    process = FORK.Process(target=target, args=(*args, write))
    process.start()
    os.close(write)
    seen = 0
    with os.fdopen(read) as pipe:
        for line in pipe:  # blocks until the worker acknowledges an append or exits
            thread_id, count = line.split()
            acknowledged.add((thread_id, int(count)))
            seen += 1
            if kill_after is not None and seen >= kill_after:
                os.kill(process.pid or 0, signal.SIGKILL)
                break
    process.join(60)
    assert not process.is_alive(), "a worker hung"
    return acknowledged
