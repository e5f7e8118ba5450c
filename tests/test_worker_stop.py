"""A worker stops on its signal whatever procrastinate was doing when it came.

procrastinate's worker, cancelled while it opens or closes its connection pool, can
consume the cancellation and raise that pool's error instead (`PoolClosed`). The job
loop took it for a failure, logged it and started again in a second, so a Ctrl-C at
that moment left the worker running for ever (a test sending SIGINT just after
"worker: running" timed out after 120 s under load).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from types import SimpleNamespace
from typing import Any

import pytest

from twelvefold.server.queue import run_worker


class PoolClosed(Exception):
    """What psycopg_pool raises for a pool closed under it."""


class StartedAgain(BaseException):
    """The job loop started procrastinate's worker again after the signal (no Exception:
    the loop does not catch it, so the test fails at once instead of hanging)."""


class _App:
    """A procrastinate app whose worker, when cancelled, raises its pool's error."""

    def __init__(self) -> None:
        self.runs = 0
        self.running = asyncio.Event()

    async def run_worker_async(self, **_: Any) -> None:
        self.runs += 1
        if self.runs > 1:
            raise StartedAgain
        self.running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise PoolClosed("the pool 'pool-2' is already closed") from None


class _Work:
    def __init__(self) -> None:
        self.queue = SimpleNamespace(app=_App())

    async def schedule_waiting(self) -> None:
        return None

    async def sweep(self) -> list[str]:
        return []


def test_a_signal_whose_cancellation_comes_out_as_a_pool_error_stops_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    work = _Work()

    async def main() -> int:
        worker = asyncio.create_task(
            run_worker(work, concurrency=1, grace=0.1, sweep_seconds=60)  # type: ignore[arg-type]
        )
        await work.queue.app.running.wait()
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the worker's loop handler
        return await asyncio.wait_for(worker, 10)

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(main()) == signal.SIGTERM
    assert work.queue.app.runs == 1  # not started again
    assert not [r for r in caplog.records if "job loop failed" in r.getMessage()]
