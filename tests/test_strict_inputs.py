"""A value a person or a program hands the runtime is held to the rule a model's output is
held to (rt13): JSON, validated strictly. `true`, `"1"` and `1.0` are not an `int`, for a
launch's input, an outside event, an agent whose input is a scalar, and the HTTP API's own
request fields, just as they are not for a model's output (which is asked again).

The table below is run through both paths: the real model client against the scripted
server (an invalid output fails the step with `InvalidOutput`), and the launch input, as
JSON text (the CLI's `--input`) and as parsed data (a library caller's dict).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.support.openai_server import ScriptedOpenAI
from twelvefold.cli import cli
from twelvefold.runtime.api import InputError, Runtime, typed_input
from twelvefold.runtime.model import OpenAIModel
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.strict import ParsedJson
from twelvefold.runtime.types import StepFailed

KINDS = """\
agent kinds {
  input string
  start decide
}

type Inner { x: int }

type Kinds {
  i: int
  f: float
  b: bool
  s: string
  e: "a" | "b"
  l: list[int]
  m: map[string, int]
  n: Inner
  o: int?
}

llm decide -> Kinds {
  prompt "decide.j2"
  on Kinds -> done
  on error -> failed
}

final done(Kinds)
final failed
"""

TAKES_KINDS = KINDS.replace("input string", "input Kinds").replace("agent kinds", "agent takes")

VALID: dict[str, Any] = {
    "i": 1, "f": 1.5, "b": True, "s": "x", "e": "a",
    "l": [1], "m": {"k": 1}, "n": {"x": 1}, "o": None,
}  # fmt: skip

# (field, JSON value, whether it is a valid value of the field)
CASES = [
    ("i", 1, True), ("i", 1.0, False), ("i", True, False), ("i", "1", False), ("i", 1.5, False),
    ("f", 1, True), ("f", 2.5, True), ("f", "1.5", False), ("f", True, False),
    ("b", False, True), ("b", 1, False), ("b", "true", False), ("b", 0, False),
    ("s", "y", True), ("s", 1, False), ("s", True, False), ("s", None, False),
    ("e", "b", True), ("e", "c", False), ("e", 1, False),
    ("l", [1, 2], True), ("l", [1.0], False), ("l", ["1"], False), ("l", "1", False),
    ("m", {"k": 2}, True), ("m", {"k": "1"}, False), ("m", {"k": True}, False),
    ("n", {"x": 2}, True), ("n", {"x": "1"}, False), ("n", '{"x": 1}', False),
    ("o", 3, True), ("o", "1", False), ("o", 1.0, False),
]  # fmt: skip
IDS = [f"{field}={json.dumps(value)}" for field, value, _ in CASES]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "kinds.agent").write_text(KINDS)
    (tmp_path / "takes.agent").write_text(TAKES_KINDS)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "decide.j2").write_text("{{ context }}\n")
    return tmp_path


def runtime(project: Path, model: Any = None) -> Runtime:
    return Runtime(SqliteStore(project / "t.db"), model=model, cache_dir=project / "cache")


def accepted_from_the_model(project: Path, server: ScriptedOpenAI, value: Any) -> bool:
    server.reply_tool(value)
    model = OpenAIModel(
        model="test-model", base_url=server.base_url, api_key="k", transport_retries=0
    )
    with runtime(project, model) as rt:
        view = rt.launch(project / "kinds.agent", "go")
        failed = [e for e in rt.events(view.id) if isinstance(e, StepFailed)]
    assert view.status == "finished", view
    assert len(server.script) == 0
    if failed:
        assert failed[0].error.type == "InvalidOutput", failed
    return not failed


def accepted_as_input(project: Path, value: Any) -> tuple[bool, bool, bool]:
    """Whether `value` launches `takes`: given as JSON text (the CLI), as data (a library
    caller), and as data parsed from JSON (an HTTP body)."""
    answers = []
    with runtime(project) as rt:
        agent = rt.agent(project / "takes.agent")
        for given in (json.dumps(value), value, ParsedJson(value)):
            try:
                typed_input(agent, given)
            except InputError:
                answers.append(False)
            else:
                answers.append(True)
    return answers[0], answers[1], answers[2]


@pytest.mark.parametrize(("field", "value", "valid"), CASES, ids=IDS)
def test_a_launch_input_is_valid_exactly_when_a_model_output_would_be(
    project: Path, openai_server: ScriptedOpenAI, field: str, value: Any, valid: bool
) -> None:
    given = {**VALID, field: value}
    assert accepted_from_the_model(project, openai_server, given) is valid
    assert accepted_as_input(project, given) == (valid, valid, valid)


def test_a_refused_input_names_the_field_and_the_type_it_wants(project: Path) -> None:
    with runtime(project) as rt:
        with pytest.raises(InputError) as refused:
            rt.launch(project / "takes.agent", json.dumps({**VALID, "i": True}))
        assert rt.threads() == []
    wanted = "the input is not a valid Kinds: i: Input should be a valid integer"
    assert str(refused.value) == wanted


SCALAR = """\
agent scalar {
  input KIND
  start decide
}

type Done { message: string }

llm decide -> Done {
  prompt "decide.j2"
  on Done -> done
}

final done(Done)
"""


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("int", "7", 7), ("int", "1.0", None), ("int", "1.5", None), ("int", "true", None),
        ("int", '"1"', None),
        ("float", "7", 7.0), ("float", "1.5", 1.5), ("float", "true", None),
        ("float", '"1.5"', None), ("float", "NaN", None),
        ("bool", "true", True), ("bool", "false", False), ("bool", "1", None),
        ("bool", '"true"', None), ("bool", "yes", None),
    ],
)  # fmt: skip
def test_an_agent_that_takes_a_scalar_takes_it_as_json_and_strictly(
    project: Path, kind: str, text: str, expected: Any
) -> None:
    (project / "scalar.agent").write_text(SCALAR.replace("KIND", kind))
    with runtime(project) as rt:
        agent = rt.agent(project / "scalar.agent")
        if expected is None:
            with pytest.raises(InputError, match=f"takes an? {kind} input|not a finite number"):
                typed_input(agent, text)
            return
        value = typed_input(agent, text)
        assert value == expected and type(value) is type(expected)
        assert typed_input(agent, expected) == expected  # a library caller's value
        if kind != "float":
            with pytest.raises(InputError):
                typed_input(agent, 1.0 if kind == "int" else 1)
        else:
            with pytest.raises(InputError):
                typed_input(agent, math.inf)


def test_the_cli_refuses_a_bool_for_an_int_field_and_says_which(project: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["run", str(project / "takes.agent"), "--db", str(project / "t.db"),
         "--input", json.dumps({**VALID, "i": True})],
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # as for every input that does not fit
    assert "i: Input should be a valid integer" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("answer", [5, True, 2.5, ["which"], {"text": "v1"}])
def test_an_answer_is_text_and_nothing_else_becomes_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: Any
) -> None:
    from tests.runtime_helpers import EXAMPLES, ScriptedModel

    monkeypatch.setenv("DEPLOYBOT_LEDGER", str(tmp_path / "ledger.jsonl"))
    model = ScriptedModel([{"type": "RequestMoreInformation", "question": "which tag?"}])
    with Runtime(SqliteStore(tmp_path / "t.db"), model=model, cache_dir=tmp_path) as rt:
        view = rt.launch(EXAMPLES / "deploybot.agent", "deploy")
        assert view.waiting_for == "answer"
        with pytest.raises(InputError, match=f"an answer is text, not {type(answer).__name__}"):
            rt.resume(view.id, request=view.request, answer=answer)
        assert rt.get(view.id).seq == view.seq


@pytest.mark.parametrize("i", [1.0, "1", True], ids=["a float", "a string", "a boolean"])
def test_a_schedules_input_of_another_type_stops_the_server_at_start(project: Path, i: Any) -> None:
    from twelvefold.server.schedules import ServeError, parse_schedules

    with runtime(project) as rt:
        served = {"takes": rt.agent(project / "takes.agent")}
        entry = {"agent": "takes", "cron": "@daily", "input": {**VALID, "i": i}}
        with pytest.raises(ServeError, match="i: Input should be a valid integer"):
            parse_schedules({"nightly": entry}, served)
        assert parse_schedules({"nightly": {**entry, "input": VALID}}, served)
