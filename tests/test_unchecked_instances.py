"""A value handed to the runtime as an instance of a declared type is checked like a dict.

pydantic trusts an instance of a model by default: `Model.model_construct(...)` skips
validation, a subclass may carry fields the declared type forbids, and a dict may hold
such an instance. A tool's result, a model of the user's own, a launch input or an
event given that way used to be stored unchecked; the store could then not read the
thread back ("event 4 does not fit the agent"), and the tool after it ran on a value no
validation had passed. Now the generated types revalidate instances (pydantic's
`revalidate_instances="always"`), and the runtime validates what it is handed: a bad
result or output fails its step (recorded, the thread readable), a bad input or event
is refused.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tests.runtime_helpers import ScriptedModel, no_messages
from twelvefold.runtime.api import InputError, Runtime
from twelvefold.runtime.model import ModelReply, ModelRequest
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.types import StepFailed, ToolResult, Usage

AGENT = """\
agent nested {
  input Order
  start decide
}

type Item { sku: string, qty: int }
type Order { item: Item, note: string }
type Ship { item: Item }
type Shipped { item: Item, label: string }

llm decide -> Ship {
  prompt "decide.j2"
  on Ship -> ship
}

tool ship(Ship) -> Shipped = "nested_tools:ship" { next done }

final done(Shipped)
"""

TOOLS = """\
import sys


def _types(value):
    return sys.modules[type(value).__module__]


def ship(value):
    how = value.item.sku
    types = _types(value)
    if how == "constructed":  # no validation at all: qty is text
        return types.Shipped.model_construct(item=value.item, label=123)
    if how == "nested":  # a valid dict holding an instance that was never validated
        return {"item": types.Item.model_construct(sku="x", qty="many"), "label": "L"}
    if how == "subclass":  # a field the declared type forbids
        class Extended(types.Shipped):
            secret_route: str = "via the back door"

        return Extended(item=value.item, label="L")
    if how == "plain-subclass":  # a subclass adding no field is the declared type's value
        class Renamed(types.Shipped):
            pass

        return Renamed(item=value.item, label="L")
    return {"item": value.item, "label": "L"}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "nested.agent").write_text(AGENT)
    (tmp_path / "nested_tools.py").write_text(TOOLS)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "decide.j2").write_text("{{ last }}")
    return tmp_path


def _runtime(folder: Path, model: Any) -> Runtime:
    return Runtime(
        SqliteStore(folder / "t.db"),
        model=model,
        tool_paths=[folder],
        messages=no_messages,
        cache_dir=folder / "cache",
    )


def _ship_output(request: ModelRequest) -> BaseModel:
    (ship,) = request.action.outputs
    return ship.model_validate({"item": request.action.value.item.model_dump()})


def _run(folder: Path, sku: str) -> tuple[Any, list[Any]]:
    with _runtime(folder, ScriptedModel(_ship_output)) as rt:
        view = rt.launch(folder / "nested.agent", {"item": {"sku": sku, "qty": 1}, "note": "n"})
        return view, rt.events(view.id)  # read back from the store: it must fit the agent


@pytest.mark.parametrize("sku", ["constructed", "nested", "subclass"])
def test_a_tools_unchecked_instance_fails_its_step_and_the_thread_stays_readable(
    folder: Path, sku: str
) -> None:
    view, events = _run(folder, sku)
    assert view.status == "failed"
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.step == "ship"
    assert not [e for e in events if isinstance(e, ToolResult)]


def test_a_subclass_adding_no_field_is_recorded_as_the_declared_type(folder: Path) -> None:
    view, events = _run(folder, "plain-subclass")
    assert view.status == "finished"
    (result,) = [e for e in events if isinstance(e, ToolResult)]
    assert type(result.result).__name__ == "Shipped"


class _Constructing:
    """A model of the user's own that builds its output without validation."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    async def complete(self, request: ModelRequest) -> ModelReply:
        (ship,) = request.action.outputs
        return ModelReply(ship.model_construct(**self.fields), Usage(latency_ms=1.0))


@pytest.mark.parametrize(
    "fields",
    [{"item": "not an item"}, {"item": {"sku": "a", "qty": "many"}}, {}],
    ids=["wrong type", "nested dict", "missing field"],
)
def test_a_custom_models_unchecked_output_fails_the_step_before_any_tool_runs(
    folder: Path, fields: dict[str, Any]
) -> None:
    with _runtime(folder, _Constructing(fields)) as rt:
        view = rt.launch(folder / "nested.agent", {"item": {"sku": "a", "qty": 1}, "note": "n"})
        events = rt.events(view.id)
    assert view.status == "failed"
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert (failed.step, failed.error.type) == ("decide", "ModelError")
    assert "not a valid Ship" in failed.error.message


def test_a_custom_models_output_with_an_unvalidated_nested_instance_fails_the_step(
    folder: Path,
) -> None:
    class Nested:
        async def complete(self, request: ModelRequest) -> ModelReply:
            (ship,) = request.action.outputs
            item_type = sys.modules[ship.__module__].Item
            item = item_type.model_construct(sku="a", qty="many")
            return ModelReply(ship.model_construct(item=item), Usage(latency_ms=1.0))

    with _runtime(folder, Nested()) as rt:
        view = rt.launch(folder / "nested.agent", {"item": {"sku": "a", "qty": 1}, "note": "n"})
        events = rt.events(view.id)
    assert view.status == "failed"
    assert [e.step for e in events if isinstance(e, StepFailed)] == ["decide"]


def test_an_unchecked_input_instance_is_refused(folder: Path) -> None:
    with _runtime(folder, ScriptedModel(_ship_output)) as rt:
        agent = rt.agent(folder / "nested.agent")
        order, item = agent.spec.types["Order"], agent.spec.types["Item"]
        bad = order.model_construct(item=item.model_construct(sku="a", qty="many"), note="n")
        with pytest.raises(InputError, match="not a valid Order"):
            rt.launch(agent, bad)
        assert rt.threads() == []


@pytest.mark.parametrize(
    "verdict",
    [{"accept": [0], "reason": "r"}, {"reason": "no accept"}, {"accept": True, "reason": 12345}],
    ids=["accept a list", "no accept", "reason a number"],
)
def test_a_custom_judges_unchecked_verdict_fails_the_step_and_pays_nothing(
    tmp_path: Path, verdict: dict[str, Any]
) -> None:
    # A judge of the user's own that builds its verdict unchecked: truthy junk must not
    # accept the output (the refund would be paid), and no crash may leave the thread
    # running: the step fails with the judge's error and `on error` decides.
    import shutil

    from twelvefold.runtime.types import Verdict

    folder = tmp_path / "f"
    shutil.copytree(Path(__file__).parent / "checks_fixtures", folder)
    paid = tmp_path / "paid"

    class Judging:
        async def complete(self, request: ModelRequest) -> ModelReply:
            (shape,) = request.action.outputs
            if shape is Verdict:
                return ModelReply(Verdict.model_construct(**verdict), Usage(latency_ms=1.0))
            return ModelReply(shape(amount=5, note="ok"), Usage(latency_ms=1.0))

    claim = {"order": "o-1", "amount": 40.0, "api_key": "sk-x"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REFUNDS_PAID", str(paid))
        with _runtime(folder, Judging()) as rt:
            view = rt.launch(folder / "refunds.agent", claim)
            events = rt.events(view.id)
    assert not paid.exists()
    assert view.status != "running"
    failed = [e for e in events if isinstance(e, StepFailed)]
    assert failed and failed[0].step == "decide", events


DEEP = """\
agent deep {
  input Node
  start nest
}

type Node { v: int, next: Node? }

tool nest(Node) -> Node = "deep_tools:nest" { next done }

final done(Node)
"""

DEEP_TOOLS = """\
import os


def nest(value):
    depth, digits = int(os.environ["DEPTH"]), int(os.environ["DIGITS"])
    node = {"v": 10**digits - 1, "next": None}
    for _ in range(depth - 1):
        node = {"v": 1, "next": node}
    return node
"""


@pytest.mark.parametrize(
    ("depth", "digits", "problem"),
    [(1, 5000, "digits"), (200, 1, "deep")],
    ids=["an int of 5,000 digits", "nested 200 deep"],
)
def test_a_value_the_store_could_not_read_back_is_refused_before_it_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, depth: int, digits: int, problem: str
) -> None:
    # Both validate, and both were written; neither could be read back (the JSON reader
    # takes ints of at most 4,300 digits, the decoder recursion ~250 levels), so the thread
    # was lost. Now a tool's result is a step failure and a launch input an InputError.
    (tmp_path / "deep.agent").write_text(DEEP)
    (tmp_path / "deep_tools.py").write_text(DEEP_TOOLS)
    monkeypatch.setenv("DEPTH", str(depth))
    monkeypatch.setenv("DIGITS", str(digits))
    with _runtime(tmp_path, ScriptedModel([])) as rt:
        view = rt.launch(tmp_path / "deep.agent", {"v": 1, "next": None})
        events = rt.events(view.id)  # read back: it must fit the agent
        (failed,) = [e for e in events if isinstance(e, StepFailed)]
        assert (failed.step, failed.error.type) == ("nest", "Unstorable")
        assert problem in failed.error.message
        node: Any = rt.agent(tmp_path / "deep.agent").spec.types["Node"]
        value = {"v": 10**digits - 1, "next": None}
        for _ in range(depth - 1):
            value = {"v": 1, "next": value}
        with pytest.raises(InputError, match=problem):
            rt.launch(tmp_path / "deep.agent", node.model_validate(value))
        assert len(rt.threads()) == 1


@pytest.mark.parametrize("field", ["latency_ms", "cost_usd", "input_tokens"])
def test_a_custom_models_huge_usage_number_fails_the_step_and_the_thread_reads_back(
    folder: Path, field: str
) -> None:
    # An int of 5,000 digits in a reply's usage: a latency was stored and could not be
    # read back; a cost overflowed as it was judged and left the thread running (rt12).
    class Huge:
        async def complete(self, request: ModelRequest) -> ModelReply:
            usage = Usage(**{"latency_ms": 1.0, field: 10**5000})
            return ModelReply(_ship_output(request), usage)

    with _runtime(folder, Huge()) as rt:
        view = rt.launch(folder / "nested.agent", {"item": {"sku": "a", "qty": 1}, "note": "n"})
        events = rt.events(view.id)
    assert view.status == "failed"
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert (failed.step, failed.error.type) == ("decide", "ModelError")
    assert f"{field} as a huge integer" in failed.error.message


def test_a_configuration_nested_hundreds_deep_is_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from twelvefold.cli import cli

    (tmp_path / "nested.agent").write_text(AGENT)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "decide.j2").write_text("{{ last }}")
    (tmp_path / "twelvefold.toml").write_text("x = " + "[" * 2000 + "]" * 2000 + "\n")
    result = CliRunner().invoke(cli, ["check", str(tmp_path / "nested.agent")])
    assert result.exit_code == 1, result.output
    assert "nested too deep" in result.output
    assert "Traceback" not in result.output
