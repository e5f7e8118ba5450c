"""One logical tool call, one idempotency key; attempts that never overlap; tools that
resolve per agent (issue 8 item 4, issue 9 §2 "Tool references" and §7).

Through the real runtime: SQLite, the openai + instructor client against the scripted
server on loopback, agents compiled from .agent files in a temporary folder. Slow tools
wait on a barrier file, never on a sleep.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.e2e import ModelTurns, runtime
from tests.support.openai_server import Reply, ScriptedOpenAI
from tests.support.waiting import wait_for
from twelvefold.cli import cli
from twelvefold.runtime import tools
from twelvefold.runtime.api import InputError, Runtime
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.types import (
    IllegalEvent,
    Retried,
    StepFailed,
    ToolResult,
    ToolStarted,
)

FORK = multiprocessing.get_context("fork")

AGENT = """\
agent NAME "Refunds orders." {
  input string
  max_steps 20
  start decide
}

type Refund "Refund an order." { order: string, amount: int }
type Done "Stop." { message: string }
type Receipt { id: string }

llm decide -> Refund | Done {
  prompt "decide.j2"
  on Refund -> check
  on Done -> done
}

tool check(Refund) -> Refund = "tools:check" { next refund }

tool refund(Refund) -> Receipt = "FUNCTION" {
  next decide
SETTINGS}

final done(Done)
"""

TOOLS = '''\
"""The refund agents' tools: each call appends a line to $REFUND_LOG; $REFUND_MODE says
how `refund` and `pay` behave; "block" waits for the file $REFUND_BARRIER."""

import os
import time
from pathlib import Path


def _log(line):
    with open(os.environ["REFUND_LOG"], "a") as out:
        out.write(line + "\\n")


def _behave(line):
    _log(line)
    mode = os.environ.get("REFUND_MODE", "ok")
    if mode == "block":
        barrier = Path(os.environ["REFUND_BARRIER"])
        for _ in range(60_000):  # a barrier, not a delay: at most a minute, then give up
            if barrier.exists():
                break
            time.sleep(0.001)
        _log("returned " + line)
    if mode == "decline":
        raise PermissionError("card declined")
    if mode == "wrong":
        return {"receipt": 1}
    if mode == "exit":
        raise SystemExit(0)
    return {"id": "r-" + line}


def check(refund):
    return refund


def refund(refund, idempotency_key):
    return _behave(idempotency_key)


def pay(refund):
    return _behave("pay")
'''


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    (folder / "prompts").mkdir(parents=True)
    (folder / "prompts" / "decide.j2").write_text("Refund what the user asks for.\n")
    (folder / "tools.py").write_text(TOOLS)
    write_agent(folder, "refunds", "tools:refund", "  timeout 200ms\n  retry 2\n")
    write_agent(folder, "payments", "tools:pay", "  timeout 200ms\n  retry 2\n")
    write_agent(folder, "patient", "tools:refund", "")
    write_agent(folder, "patient_payments", "tools:pay", "")
    monkeypatch.setenv("REFUND_LOG", str(tmp_path / "refund.log"))
    monkeypatch.setenv("REFUND_BARRIER", str(tmp_path / "barrier"))
    monkeypatch.setenv("REFUND_MODE", "ok")
    return folder


def write_agent(folder: Path, name: str, function: str, settings: str) -> Path:
    text = AGENT.replace("NAME", name).replace("FUNCTION", function)
    path = folder / f"{name}.agent"
    path.write_text(text.replace("SETTINGS", settings))
    return path


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "threads.db"


@pytest.fixture
def shared(openai_server: ScriptedOpenAI, db: Path, cache: Path) -> Iterator[Runtime]:
    with runtime(openai_server, db, cache) as opened:
        yield opened


def tool_log() -> list[str]:
    path = Path(os.environ["REFUND_LOG"])
    return path.read_text().splitlines() if path.exists() else []


def refund_calls() -> list[str]:
    return [line for line in tool_log() if not line.startswith("returned ")]


def release_barrier(*keys: str) -> None:
    """Let blocked tools return, and wait until this process's abandoned attempts did."""
    Path(os.environ["REFUND_BARRIER"]).touch()
    for key in keys:
        in_flight = getattr(tools, "_IN_FLIGHT", {}).get(key)  # (absent on old builds)
        if in_flight is not None:
            assert in_flight.wait(60), f"the attempt with key {key} never returned"


def tool_events(rt: Runtime, thread_id: str) -> list[tuple[int, str, str | None]]:
    """(event number, kind, key) of each tool event and retry in the log."""
    shown = []
    for number, event in enumerate(rt.events(thread_id), 1):
        if isinstance(event, ToolStarted | StepFailed | Retried):
            shown.append((number, type(event).__name__, event.key))
        elif isinstance(event, ToolResult):
            shown.append((number, "ToolResult", None))
    return shown


REFUND = {"type": "Refund", "order": "A1", "amount": 5}
DONE = {"type": "Done", "message": "refunded"}


# ---- one call, one key ------------------------------------------------------------------


def test_a_retry_after_a_timeout_reuses_the_key_of_the_call(
    project: Path, shared: Runtime, model: ModelTurns, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 8 item 4: `resume --retry` after a keyed tool timed out gave the retry a new
    # key (`…:refund:8` after `…:refund:5`), so an idempotent tool paid twice.
    monkeypatch.setenv("REFUND_MODE", "block")
    model.then(REFUND, DONE)
    view = shared.launch(project / "refunds.agent", "refund order A1")
    key = f"{view.id}:refund:5"
    assert view.status == "failed" and view.error is not None
    assert view.error.type == "TimeoutError"
    assert view.state.retry_key == key
    assert refund_calls() == [key]  # `retry 2`: the attempt still runs, so no other starts

    release_barrier(key)
    monkeypatch.setenv("REFUND_MODE", "ok")
    view = shared.retry(view.id, by="carol")
    assert view.status == "finished"
    assert tool_events(shared, view.id) == [
        (3, "ToolStarted", f"{view.id}:check:3"),
        (4, "ToolResult", None),
        (5, "ToolStarted", key),
        (6, "StepFailed", key),
        (7, "Retried", key),
        (8, "ToolStarted", key),  # not `…:refund:8`
        (9, "ToolResult", None),
    ]
    assert refund_calls() == [key, key]


def test_a_retry_while_the_timed_out_attempt_still_runs_starts_nothing(
    project: Path, shared: Runtime, model: ModelTurns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFUND_MODE", "block")
    model.then(REFUND, DONE)
    view = shared.launch(project / "refunds.agent", "refund order A1")
    key = f"{view.id}:refund:5"
    again = shared.retry(view.id)
    assert again.status == "failed" and again.error is not None
    assert again.error.type == "StillRunning"
    assert again.state.retry_key == key
    assert refund_calls() == [key]  # never two attempts of one call at once
    release_barrier(key)
    monkeypatch.setenv("REFUND_MODE", "ok")
    assert shared.retry(view.id).status == "finished"
    assert refund_calls() == [key, key]
    assert {k for _, kind, k in tool_events(shared, view.id) if kind == "ToolStarted"} == {
        f"{view.id}:check:3",
        key,
    }


def test_a_keyless_tool_that_timed_out_is_not_run_again_automatically(
    project: Path, shared: Runtime, model: ModelTurns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFUND_MODE", "block")
    model.then(REFUND, DONE)
    view = shared.launch(project / "payments.agent", "pay order A1")
    assert view.status == "failed" and view.error is not None
    assert view.error.type == "TimeoutError"
    assert refund_calls() == ["pay"]  # `retry 2`, yet it may have paid: once
    release_barrier(f"{view.id}:refund:5")
    monkeypatch.setenv("REFUND_MODE", "ok")
    assert shared.retry(view.id, by="carol").status == "finished"  # a person's retry
    assert refund_calls() == ["pay", "pay"]


def test_retry_2_runs_a_tool_that_returned_the_wrong_shape_once(
    project: Path,
    db: Path,
    shared: Runtime,
    model: ModelTurns,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Issue 8 item 4: three payments and one `tool_started` in the log.
    monkeypatch.setenv("REFUND_MODE", "wrong")
    model.then(REFUND)
    view = shared.launch(project / "refunds.agent", "refund order A1")
    key = f"{view.id}:refund:5"
    assert view.status == "failed" and view.error is not None
    assert view.error.type == "ValidationError"
    assert refund_calls() == [key]
    # It ran: the result could not be read, so a retry reuses its key (and says so).
    assert view.state.retry_key == key
    result = CliRunner().invoke(cli, ["resume", view.id, "--retry", "--db", str(db)])
    assert result.exit_code == 1, result.output  # failed again, the same way
    assert f"retried       reusing key {key}" in result.output
    assert f"a retry reuses its key {key}" in result.output
    assert refund_calls() == [key, key]


def test_a_returned_error_then_a_persons_retry_is_a_new_call_unless_they_reuse_the_key(
    project: Path, shared: Runtime, model: ModelTurns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFUND_MODE", "decline")
    model.then(REFUND, DONE)
    view = shared.launch(project / "refunds.agent", "refund order A1")
    first = f"{view.id}:refund:5"
    assert view.error is not None and view.error.type == "PermissionError"
    assert refund_calls() == [first] * 3  # `retry 2`: the tool said no three times
    assert view.state.retry_key is None  # its outcome is known

    view = shared.retry(view.id)  # a declined payment may be tried again: a new key
    second = f"{view.id}:refund:8"
    assert view.status == "failed"
    assert refund_calls()[3:] == [second] * 3

    monkeypatch.setenv("REFUND_MODE", "ok")
    view = shared.retry(view.id, reuse_key=True)  # ... or as the same call
    assert view.status == "finished"
    assert refund_calls()[6:] == [second]
    assert [k for _, kind, k in tool_events(shared, view.id) if kind == "Retried"] == [
        None,
        second,
    ]


def test_resume_retry_reuse_key_on_the_command_line(
    project: Path,
    db: Path,
    shared: Runtime,
    model: ModelTurns,
    openai_server: ScriptedOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REFUND_MODE", "decline")
    model.then(REFUND, DONE)
    view = shared.launch(project / "refunds.agent", "refund order A1")
    monkeypatch.setenv("REFUND_MODE", "ok")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    base = ["resume", view.id, "--db", str(db), "--model", "scripted-model", "--json"]
    wrong = CliRunner().invoke(cli, [*base, "--reuse-key"])
    assert wrong.exit_code == 2 and "--reuse-key goes with --retry" in wrong.output
    result = CliRunner().invoke(cli, [*base, "--retry", "--reuse-key"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1])["status"] == "finished"
    assert refund_calls() == [f"{view.id}:refund:5"] * 4


def test_reuse_key_without_a_failed_tool_call_is_refused(
    project: Path, db: Path, shared: Runtime, model: ModelTurns
) -> None:
    model.then(REFUND, DONE)
    view = shared.launch(project / "refunds.agent", "refund order A1")
    assert view.status == "finished"
    with pytest.raises(InputError, match="no failed tool call"):
        shared.retry(view.id, reuse_key=True)
    result = CliRunner().invoke(cli, ["resume", view.id, "--retry", "--reuse-key", "--db", str(db)])
    assert result.exit_code == 1 and "no failed tool call at `done`" in result.output
    assert len(shared.events(view.id)) == view.seq  # nothing recorded


def test_the_reducer_refuses_a_retry_that_would_give_an_unknown_outcome_a_new_key(
    project: Path, shared: Runtime, model: ModelTurns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFUND_MODE", "wrong")
    model.then(REFUND)
    view = shared.launch(project / "refunds.agent", "refund order A1")
    events = shared.events(view.id)
    module = shared.agent(project / "refunds.agent").module
    state = module.replay(events)
    with pytest.raises(IllegalEvent, match="outcome is unknown"):
        module.reduce(state, Retried(step="refund", key=None))
    with pytest.raises(IllegalEvent, match="outcome is unknown"):
        module.reduce(state, Retried(step="refund", key=f"{view.id}:refund:99"))


# ---- crashes between ToolStarted and the result -----------------------------------------


def crashing_worker(
    server_url: str, db: Path, cache: Path, agent: Path, thread_id: str
) -> None:  # pragma: no cover - runs in the child
    os.environ["OPENAI_BASE_URL"] = server_url
    from tests.support.e2e import runtime as make_runtime

    class Server:
        base_url = server_url

    with make_runtime(Server(), db, cache) as rt:  # type: ignore[arg-type]
        rt.launch(agent, "refund order A1", thread_id=thread_id)
    os._exit(0)


def crash_inside_the_tool(
    openai_server: ScriptedOpenAI, db: Path, cache: Path, agent: Path, thread_id: str
) -> None:
    """Run the thread in a child process and SIGKILL it while its tool blocks."""
    child = FORK.Process(
        target=crashing_worker, args=(openai_server.base_url, db, cache, agent, thread_id)
    )
    child.start()
    for _ in range(60_000):  # until the tool has started (a barrier, not a delay)
        if refund_calls() or not child.is_alive():
            break
        time.sleep(0.001)
    assert refund_calls(), "the child never reached the tool"
    os.kill(child.pid or 0, signal.SIGKILL)
    child.join()


@pytest.fixture
def crash(
    project: Path,
    db: Path,
    cache: Path,
    model: ModelTurns,
    openai_server: ScriptedOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[str, str], None]:
    """`crash(agent, thread_id)`: launch the thread in a child process, kill it inside the
    tool (after its `tool_started`), and let tools return normally from then on."""

    def crashed(agent: str, thread_id: str) -> None:
        monkeypatch.setenv("REFUND_MODE", "block")
        monkeypatch.setenv("TWELVEFOLD_LEASE_SECONDS", "1")  # the child's lease: short
        model.then(REFUND, DONE)
        crash_inside_the_tool(openai_server, db, cache, project / f"{agent}.agent", thread_id)
        monkeypatch.setenv("REFUND_MODE", "ok")
        # The dead child's lease is what says it died: the next process takes over once
        # it lapses (docs/runtime.md, "Ownership").
        store = SqliteStore(db)
        try:
            wait_for(lambda: store.lease(thread_id) is None, "the dead child's lease to lapse")
        finally:
            store.close()

    return crashed


def test_after_a_crash_a_keyed_call_runs_again_with_its_key(
    crash: Callable[[str, str], None], shared: Runtime
) -> None:
    crash("patient", "crashed")
    key = "crashed:refund:5"
    assert refund_calls() == [key]
    assert shared.resume("crashed").status == "finished"
    assert refund_calls() == [key, key]
    assert tool_events(shared, "crashed")[2:] == [(5, "ToolStarted", key), (6, "ToolResult", None)]


def test_after_a_crash_a_keyless_call_is_interrupted_and_a_persons_retry_keeps_its_key(
    crash: Callable[[str, str], None], shared: Runtime, db: Path
) -> None:
    crash("patient_payments", "cut")
    key = "cut:refund:5"
    view = shared.resume("cut")
    assert view.status == "failed" and view.error is not None
    assert view.error.type == "Interrupted"
    # Its tool takes no key: `show` does not say a retry "reuses its key".
    shown = CliRunner().invoke(cli, ["show", "cut", "--db", str(db)])
    assert shown.exit_code == 0, shown.output
    assert "reuses its key" not in shown.output
    assert "its tool takes no idempotency key: a retry runs it again" in shown.output
    assert refund_calls() == ["pay"]  # not run again by the resume
    view = shared.retry("cut", by="carol")
    assert view.status == "finished"
    assert refund_calls() == ["pay", "pay"]
    assert tool_events(shared, "cut")[2:] == [
        (5, "ToolStarted", key),
        (6, "StepFailed", key),
        (7, "Retried", key),
        (8, "ToolStarted", key),
        (9, "ToolResult", None),
    ]


# ---- BaseException from a tool ----------------------------------------------------------


def test_a_tool_that_raises_system_exit_fails_the_step_and_run_json_says_so(
    project: Path,
    db: Path,
    model: ModelTurns,
    openai_server: ScriptedOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Issue 9 §2: `"sys:exit"` ended `run --json` with exit 0, nothing printed, and the
    # thread stayed `running`.
    monkeypatch.setenv("REFUND_MODE", "exit")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    model.then(REFUND)
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(project / "patient.agent"),
            "--input",
            "refund order A1",
            "--db",
            str(db),
            "--model",
            "scripted-model",
            "--json",
        ],
    )
    view = json.loads(result.output.splitlines()[-1])
    assert view["status"] == "failed"
    assert view["error"]["type"] == "SystemExit"
    assert "tried to end the process" in view["error"]["message"]


# ---- tool resolution per agent ----------------------------------------------------------


def two_agents(tmp_path: Path) -> tuple[Path, Path]:
    agents = []
    for name in ("alpha", "beta"):
        folder = tmp_path / name
        (folder / "prompts").mkdir(parents=True)
        (folder / "prompts" / "decide.j2").write_text("Decide.\n")
        (folder / "tools.py").write_text(f"def act(refund=None):\n    return {{'id': '{name}'}}\n")
        text = AGENT.replace("NAME", name).replace("FUNCTION", "tools:act")
        text = text.replace('"tools:check"', '"tools:act"').replace("-> Refund =", "-> Receipt =")
        text = text.replace("tool refund(Refund)", "tool refund")
        (folder / f"{name}.agent").write_text(text.replace("SETTINGS", ""))
        agents.append(folder / f"{name}.agent")
    return agents[0], agents[1]


def receipts(rt: Runtime, thread_id: str) -> list[str]:
    # The field is `id` in the .agent file (a Python builtin, so the attribute is spelled
    # otherwise): read it by its declared name.
    return [
        e.result.model_dump(by_alias=True)["id"]
        for e in rt.events(thread_id)
        if isinstance(e, ToolResult)
    ]


def test_two_agents_that_both_name_tools_act_each_get_their_own(
    tmp_path: Path, shared: Runtime, model: ModelTurns, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 9 §7: agent B ran agent A's function, through the tool cache and sys.modules.
    alpha, beta = two_agents(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "tools", raising=False)
    model.then(REFUND, DONE, REFUND, DONE)
    first = shared.launch(alpha, "go")
    second = shared.launch(beta, "go")
    assert receipts(shared, first.id) == ["alpha", "alpha"]
    assert receipts(shared, second.id) == ["beta", "beta"]


def test_a_tools_py_in_the_current_directory_does_not_shadow_the_agents_own(
    tmp_path: Path, shared: Runtime, model: ModelTurns, monkeypatch: pytest.MonkeyPatch
) -> None:
    alpha, _ = two_agents(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "tools.py").write_text("def act(refund=None):\n    return {'id': 'impostor'}\n")
    monkeypatch.chdir(elsewhere)
    monkeypatch.delitem(__import__("sys").modules, "tools", raising=False)
    model.then(REFUND, DONE)
    view = shared.launch(alpha, "go")
    assert receipts(shared, view.id) == ["alpha", "alpha"]


def test_a_tools_package_keeps_its_relative_imports(tmp_path: Path) -> None:
    package = tmp_path / "agentdir" / "shop"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("PREFIX = 'shop-'\n")
    (package / "tools.py").write_text(
        "from .helpers import PREFIX\n\ndef act(value):\n    return {'id': PREFIX + 'ok'}\n"
    )
    tool = tools.ToolBox().resolve("shop.tools:act", [tmp_path / "agentdir"])
    assert tool.function(None) == {"id": "shop-ok"}
    assert not tool.function.__module__.startswith("shop")  # private to that folder


def test_path_folders_come_after_the_agents_folder_and_before_the_import_path(
    tmp_path: Path,
) -> None:
    own, extra = tmp_path / "own", tmp_path / "extra"
    own.mkdir()
    extra.mkdir()
    (own / "tools.py").write_text("def act():\n    return 'own'\n")
    (extra / "tools.py").write_text("def act():\n    return 'extra'\n")
    (extra / "more_tools.py").write_text("def act():\n    return 'more'\n")
    box = tools.ToolBox([extra])
    assert box.resolve("tools:act", [own]).function() == "own"
    assert box.resolve("more_tools:act", [own]).function() == "more"
    assert box.resolve("tools:act", []).function() == "extra"
    # The import path still works (an installed package's function).
    assert box.resolve("pydantic:BaseModel", [own]).name == "pydantic:BaseModel"


# ---- the standard library is refused ------------------------------------------------------


@pytest.mark.parametrize(
    "reference",
    [
        "sys:exit",
        "os:abort",
        "code:interact",
        "os.path:join",
        # rt19 F14: CPython's test modules, which sys.stdlib_module_names leaves out.
        "test.support:python_is_optimized",
        "test.support.os_helper:rmtree",
    ],
)
def test_a_standard_library_function_is_refused_unless_allowed(reference: str) -> None:
    box = tools.ToolBox()
    with pytest.raises(tools.ToolImportError, match="standard-library module"):
        box.resolve(reference)
    module = reference.partition(":")[0].partition(".")[0]
    assert box.resolve(reference, allow_stdlib=[module]).name == reference


def test_the_runtime_refuses_a_stdlib_tool_as_a_step_failure(
    tmp_path: Path, shared: Runtime, model: ModelTurns
) -> None:
    # `check` reports E118; compiled while the configuration allowed it, then the
    # allowance was withdrawn: the configuration is read at each call.
    folder = tmp_path / "quitter"
    (folder / "prompts").mkdir(parents=True)
    (folder / "prompts" / "decide.j2").write_text("Decide.\n")
    (folder / "tools.py").write_text("def check(refund):\n    return refund\n")
    config = folder / "twelvefold.toml"
    config.write_text('[tools]\nallow_stdlib = ["sys"]\n')
    agent = write_agent(folder, "quitter", "sys:exit", "")
    shared.agent(agent)  # compiles: allowed
    config.write_text("[tools]\nallow_stdlib = []\n")
    model.then(REFUND)
    view = shared.launch(agent, "go")
    assert view.status == "failed" and view.error is not None
    assert view.error.type == "ToolImportError"
    assert "standard-library module `sys`" in view.error.message


def test_check_reports_a_stdlib_tool_unless_the_configuration_allows_it(tmp_path: Path) -> None:
    folder = tmp_path / "checked"
    (folder / "prompts").mkdir(parents=True)
    (folder / "prompts" / "decide.j2").write_text("Decide.\n")
    agent = write_agent(folder, "checked", "code:interact", "")
    result = CliRunner().invoke(cli, ["check", str(agent)])
    assert result.exit_code == 1 and "E118" in result.output
    (folder / "pyproject.toml").write_text('[tool.twelvefold.tools]\nallow_stdlib = ["code"]\n')
    result = CliRunner().invoke(cli, ["check", str(agent)])
    assert "E118" not in result.output, result.output


@pytest.mark.parametrize("reference", ["_testcapi:fatal_error", "_testinternalcapi:get_configs"])
def test_a_function_of_cpythons_test_extensions_is_refused(reference: str) -> None:
    with pytest.raises(tools.ToolImportError, match="standard-library module `_test"):
        tools.ToolBox().resolve(reference)


def test_every_module_the_interpreters_own_folders_hold_counts_as_standard_library() -> None:
    """The oracle for `stdlib_module`: every top-level module in the folders this Python's
    standard library is installed in (its pure-Python folder and the folder of its
    extension modules), whether or not `sys.stdlib_module_names` lists it."""
    import importlib.util
    import pkgutil
    import sys
    import sysconfig

    from twelvefold.runtime.config import stdlib_module

    folders = {sysconfig.get_path("stdlib", vars={"installed_base": sys.base_prefix})}
    for name in sys.stdlib_module_names:
        spec = importlib.util.find_spec(name) if "." not in name else None
        if spec is not None and spec.origin and spec.origin.endswith(".so"):
            folders.add(str(Path(spec.origin).parent))
    found = {m.name for m in pkgutil.iter_modules(sorted(folders))}
    assert "json" in found and len(folders) >= 2, folders
    missed = sorted(
        name
        for name in found
        if stdlib_module(f"{name}:f") is None
        and not name.startswith("_sysconfigdata_")  # the build's settings, nothing to call
        and tools_special(name) is None
    )
    assert missed == [], missed


def tools_special(name: str) -> tuple[str, str] | None:
    from twelvefold.runtime.config import special_module

    return special_module(f"{name}:f")


# ---- property: a keyed call never sees two keys -------------------------------------------

OUTCOMES = st.lists(
    st.tuples(st.sampled_from(["decline", "wrong", "ok"]), st.booleans()), min_size=1, max_size=5
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(outcomes=OUTCOMES)
def test_property_a_keyed_call_never_sees_two_keys(
    project: Path,
    shared: Runtime,
    openai_server: ScriptedOpenAI,
    outcomes: list[tuple[str, bool]],
) -> None:
    """Whatever the tool does (says no, returns the wrong shape, succeeds) and however a
    person retries (with or without --reuse-key), every attempt of one logical call has the
    call's one key, in the log and as the tool sees it: only after the tool said no, and
    only unless the person asks to reuse the key, does a retry start a new call."""
    asked: list[int] = []

    def decide(_: dict[str, object]) -> Reply:
        asked.append(1)
        return Reply(arguments={"choice": REFUND if len(asked) == 1 else DONE})

    openai_server.responder = decide
    Path(os.environ["REFUND_LOG"]).unlink(missing_ok=True)
    (mode, _), *later = outcomes
    os.environ["REFUND_MODE"] = mode
    view = shared.launch(project / "patient.agent", "refund order A1")
    attempts = [(mode, False)]  # the tool's behaviour at each attempt, and `--reuse-key`
    for mode, reuse in later:
        if view.status != "failed":
            break
        os.environ["REFUND_MODE"] = mode
        view = shared.retry(view.id, reuse_key=reuse)
        attempts.append((mode, reuse))

    keys = [
        e.key for e in shared.events(view.id) if isinstance(e, ToolStarted) and e.step == "refund"
    ]
    assert refund_calls() == keys  # each attempt ran once, with the key its start recorded
    assert len(keys) == len(attempts)
    for i in range(1, len(keys)):
        (before, _), (_, reuse) = attempts[i - 1], attempts[i]
        same_call = before == "wrong" or reuse  # it ran (or the person asked): one call
        assert (keys[i] == keys[i - 1]) == same_call, (attempts, keys)
