"""The event loops twelvefold makes are uvloop's when uvloop is installed (issue 13, many
threads at once: less CPU per socket event and callback), and importing the runtime does
not load uvloop (tests/test_runtime_imports.py counts it with the other deferred modules).
uvloop is a dependency wherever it is built (CPython, not Windows), so it is not skipped
there."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from twelvefold.runtime.api import Runtime
from twelvefold.runtime.eventloop import new_event_loop

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or sys.implementation.name != "cpython",
    reason="uvloop is a dependency only where it is built (pyproject.toml)",
)


async def running_loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_a_synchronous_runtime_runs_its_threads_on_uvloop(tmp_path: Path) -> None:
    rt = Runtime(cache_dir=tmp_path)
    try:
        assert rt._run(running_loop_module()).startswith("uvloop")
    finally:
        rt.close()


def test_the_loop_falls_back_to_asyncios_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    loop = new_event_loop()
    try:
        assert loop.run_until_complete(running_loop_module()).startswith("asyncio")
    finally:
        loop.close()


def test_the_worker_runs_on_the_loop_twelvefold_makes() -> None:
    """`twelvefold worker` needs PostgreSQL to run at all (tests/test_worker.py); that it
    hands its runner this module's loop factory is read from its source."""
    source = (Path(__file__).resolve().parents[1] / "twelvefold/commands/worker.py").read_text()
    assert "asyncio.Runner(loop_factory=new_event_loop)" in source
    assert "asyncio.run(" not in source
