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
    # The event loop twelvefold makes (runtime/eventloop.py) is uvloop's when a loop is made.
    "uvloop",
    # pydantic scans the installed distributions for plugins when it first builds a type's
    # validator: types are built on first use, so importing builds none.
    "importlib.metadata",
    # Standard-library modules only some stores or commands need, imported where used.
    *("sqlite3", "tomllib", "socket", "shutil", "json"),
    # A SQLite store's schema upgrades and group commits load when one is opened.
    *("twelvefold.runtime.schema", "twelvefold.runtime.commits"),
)
DEFERRED_PREFIXES = ("opentelemetry", "httpx")
ENGINE = tuple(
    f"twelvefold.runtime.{name}"
    for name in (
        *("loop", "loading", "store", "model", "tools", "ratelimit", "tracing"),
        *("versions", "lease", "timeouts", "codec", "checks", "integrity"),
    )
)
"""The thread engine: `twelvefold.runtime.api` loads it when a runtime is made (or one of
its names is read from the module), not when it is imported."""


def loaded_after(code: str, deferred: tuple[str, ...] = DEFERRED) -> list[str]:
    probe = code + (
        "\nprint(sorted(m for m in sys.modules"
        f" if m in {deferred!r} or m.startswith({DEFERRED_PREFIXES!r})))"
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


def generated_module_probe(cache: Path) -> str:
    """Source that imports the counter agent's generated module (compiled into `cache`)
    and the runtime's API, and folds a log with the reducer."""
    Runtime(cache_dir=cache).agent(COUNTER)
    (generated,) = cache.glob("counter-*.py")
    return (
        "import sys, importlib.util as u\n"
        f"s = u.spec_from_file_location('agent', {str(generated)!r})\n"
        "m = u.module_from_spec(s); sys.modules['agent'] = m; s.loader.exec_module(m)\n"
        "import twelvefold.runtime.api\n"
        "from twelvefold.runtime import Started\n"
        "state = m.replay([Started(step='decide', input='count')])\n"
        "assert m.next_action(state).step == 'decide'\n"
    )


def test_importing_the_api_does_not_load_the_thread_engine(tmp_path: Path) -> None:
    assert loaded_after(generated_module_probe(tmp_path), ENGINE) == []


def test_the_api_still_gives_the_engine_names_and_a_runtime_loads_them(tmp_path: Path) -> None:
    """Reading an engine name from the module, or making a runtime, loads the engine (the
    probe above is not vacuous), and every name the API gave before is still there."""
    probe = generated_module_probe(tmp_path)
    read = probe + "from twelvefold.runtime.api import SqliteStore, Agent, started\n"
    assert set(loaded_after(read, ENGINE)) >= {
        "twelvefold.runtime.loop",
        "twelvefold.runtime.store",
    }
    made = probe + "twelvefold.runtime.api.Runtime()\n"
    assert "twelvefold.runtime.loop" in loaded_after(made, ENGINE)
    code = (
        "import sys, twelvefold.runtime.api as api\n"
        "for name in ('Engine', 'Thread', 'MemoryStore', 'Conflict', 'LeaseHeld', 'load_agent',"
        " 'AgentVersion', 'VersionError', 'find_config', 'tracing', 'timeouts', '_now'):\n"
        "    assert getattr(api, name) is not None, name\n"
        "assert not hasattr(api, 'no_such_name')\n"
    )
    assert loaded_after(code, ()) == []


def test_the_engine_loader_binds_exactly_what_mypy_is_told_the_module_has() -> None:
    """`_load_engine` repeats the imports of the `if TYPE_CHECKING:` block that declares
    the engine's names for mypy: the two lists must not drift apart."""
    tree = ast.parse((REPO / "runtime" / "api.py").read_text())
    declared = next(
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and ast.unparse(node.test) == "TYPE_CHECKING"
        and any(isinstance(s, ast.ImportFrom) and s.module == "loop" for s in node.body)
    )
    loader = next(
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == "_load_engine"
    )

    def imports(body: list[ast.stmt]) -> list[str]:
        return [ast.unparse(s) for s in body if isinstance(s, ast.ImportFrom)]

    assert imports(declared.body) == imports(loader.body) != []


def test_the_records_an_agent_imports_are_declared_without_compiling(tmp_path: Path) -> None:
    """A frozen dataclass compiles six methods when declared (about 0.4 ms each class in
    Python 3.11); the runtime's are `record`s (runtime/records.py), which compile none.
    Every runtime module an agent's import loads declares its frozen types that way."""
    code = generated_module_probe(tmp_path) + (
        "print(sorted(m for m in sys.modules if m.startswith('twelvefold.runtime')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
        check=True,
    )  # fmt: skip
    modules = ast.literal_eval(done.stdout)
    assert "twelvefold.runtime.types" in modules
    slow = []
    for module in modules:
        path = (
            REPO / "runtime" / (module.removeprefix("twelvefold.runtime").lstrip(".") or "__init__")
        )
        tree = ast.parse(path.with_suffix(".py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for decorator in node.decorator_list:
                    text = ast.unparse(decorator)
                    if "dataclass" in text and "frozen=True" in text:
                        slow.append(f"{module}.{node.name}")
    assert slow == []
