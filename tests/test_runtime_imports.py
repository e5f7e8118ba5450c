"""What importing an agent costs: a generated module and the runtime's API load only what
a reducer needs (issue 13: import under 100 ms). The libraries a thread needs only once it
runs (asyncio and its event loop, logging, the model client, templates, tracing) load then.
Counted as modules present, never timed: the time itself is in `make bench`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.runtime_helpers import counter_run_probe
from twelvefold.runtime.api import Runtime

REPO = Path(__file__).resolve().parents[1]
COUNTER = REPO / "tests" / "runtime_fixtures" / "counter.agent"
DEFERRED = (
    *("asyncio", "logging", "concurrent.futures", "openai", "instructor", "jinja2"),
    # pydantic scans the installed distributions for plugins when it first builds a type's
    # validator: types are built on first use, so importing builds none.
    "importlib.metadata",
    # Standard-library modules only some stores or commands need, imported where used.
    *("sqlite3", "tomllib", "socket", "shutil", "json"),
    # A SQLite store's schema upgrades and group commits load when one is opened.
    *("twelvefold.runtime.schema", "twelvefold.runtime.commits"),
)
DEFERRED_PREFIXES = ("opentelemetry", "httpx")


def loaded_after(code: str) -> list[str]:
    probe = code + (
        "\nprint(sorted(m for m in sys.modules"
        f" if m in {DEFERRED!r} or m.startswith({DEFERRED_PREFIXES!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return list(ast.literal_eval(done.stdout))


def test_a_generated_module_and_the_runtime_api_load_nothing_a_reducer_does_not_need(
    tmp_path: Path,
) -> None:
    Runtime(cache_dir=tmp_path).agent(COUNTER)  # compiled into the cache
    (generated,) = tmp_path.glob("counter-*.py")
    code = (
        "import sys, importlib.util as u\n"
        f"s = u.spec_from_file_location('agent', {str(generated)!r})\n"
        "m = u.module_from_spec(s); sys.modules['agent'] = m; s.loader.exec_module(m)\n"
        "import twelvefold.runtime.api\n"
        "state = m.replay([twelvefold.runtime.api.started("
        "twelvefold.runtime.api.Agent.of(m), 'count')])\n"
        "assert m.next_action(state).step == 'decide'\n"
    )
    assert loaded_after(code) == []


def test_running_a_thread_loads_asyncio_when_it_is_needed(tmp_path: Path) -> None:
    """The deferred imports happen where they are used (the probe above is not vacuous)."""
    code = counter_run_probe(tmp_path)
    assert "asyncio" in loaded_after(code)
