"""The event loops twelvefold makes are uvloop's when uvloop is installed (issue 13, many
threads at once: less CPU per socket event and callback), and importing the runtime does
not load uvloop (tests/test_runtime_imports.py counts it with the other deferred modules).
uvloop is a dependency wherever it is built (CPython, not Windows), so it is not skipped
there."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from twelvefold.runtime.api import Runtime
from twelvefold.runtime.eventloop import YOUNG_COLLECTION_EVERY, collect_less_often, new_event_loop

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


COMMANDS = Path(__file__).resolve().parents[1] / "twelvefold" / "commands"


def test_the_worker_runs_on_the_loop_twelvefold_makes() -> None:
    """`twelvefold worker` needs PostgreSQL to run at all (tests/test_worker.py runs it);
    that it hands its runner this module's loop factory is read from its source."""
    source = (COMMANDS / "worker.py").read_text()
    assert "asyncio.Runner(loop_factory=new_event_loop)" in source
    assert "asyncio.run(" not in source


@pytest.fixture
def thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_collecting_less_often_raises_only_the_first_threshold(thresholds: None) -> None:
    gc.set_threshold(700, 10, 10)
    collect_less_often()
    assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, 10, 10)
    gc.set_threshold(50_000, 3, 4)  # a host that collects even less often keeps its own
    collect_less_often()
    assert gc.get_threshold() == (50_000, 3, 4)


@pytest.mark.parametrize("command", ["serve.py", "worker.py"])
def test_serve_and_worker_collect_less_often(command: str) -> None:
    """The processes twelvefold owns that hold many threads (read from their source: both
    run in child processes in their own tests, where the threshold is not visible)."""
    assert "collect_less_often()" in (COMMANDS / command).read_text()


def test_a_runtime_leaves_its_hosts_collector_be(tmp_path: Path, thresholds: None) -> None:
    gc.set_threshold(700, 10, 10)
    rt = Runtime(cache_dir=tmp_path)
    try:
        rt._run(running_loop_module())
    finally:
        rt.close()
    assert gc.get_threshold() == (700, 10, 10)
