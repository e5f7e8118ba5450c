"""`twelvefold test` on recursive and wide declared types, and on an agent that does not
compile: every value the tests build is finite and small, and found in few steps."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from pydantic import BaseModel

from tests.support.generated import import_generated
from twelvefold.cli import cli
from twelvefold.testing import coverage
from twelvefold.testing.coverage import Constants, candidates, model_representatives
from twelvefold.testing.strategies import MAX_DEPTH, models, values_of

RECURSIVE = """\
agent chain { start decide }
type Node { v: int next: Node? kids: list[Node] tags: map[string, Node] }
type Ping { pong: Pong? }
type Pong { ping: Ping? }
llm decide -> Node | Ping {
  prompt "p.j2"
  on Node if v > 3 -> done
  on Node -> done
  on Ping -> done
}
final done
"""
TREE = """\
agent tree { start decide }
type Tree { v: int a: Tree? b: Tree? c: Tree? }
llm decide -> Tree { prompt "p.j2" on Tree if v > 3 -> done on Tree -> done }
final done
"""
CHAIN = """\
agent chain { start decide }
type Node { next: Node? }
llm decide -> Node { prompt "p.j2" on Node -> done }
final done
"""


def _wide(levels: int, optional: bool) -> str:
    """T0 ... T{levels}: each of four fields holds the next type (`a: T1?`)."""
    mark = "?" if optional else ""
    types = [
        f"type T{i} {{ a: T{i + 1}{mark} b: T{i + 1}{mark} c: T{i + 1}{mark} d: T{i + 1}{mark} }}"
        for i in range(levels)
    ]
    return "\n".join(
        [
            "agent wide { start decide }",
            *types,
            f"type T{levels} {{ x: string }}",
            'llm decide -> T0 { prompt "p.j2" on T0 -> done }',
            "final done",
            "",
        ]
    )


def _folder(tmp_path: Path, name: str, source: str) -> Path:
    (tmp_path / "prompts").mkdir(exist_ok=True)
    (tmp_path / "prompts" / "p.j2").write_text("{{ context }}\n")
    agent = tmp_path / f"{name}.agent"
    agent.write_text(source)
    return agent


def _module(tmp_path: Path, name: str, source: str) -> ModuleType:
    agent = _folder(tmp_path, name, source)
    return import_generated(agent, tmp_path / "out", tmp_path / "prompts")


def _depth(value: Any) -> int:
    """How many records deep a value nests (a list or a map is not a level here)."""
    if isinstance(value, BaseModel):
        return 1 + max((_depth(v) for v in dict(value).values()), default=0)
    if isinstance(value, dict):  # a map, or a record as JSON data (`candidates`)
        inner = [_depth(v) for v in value.values()]
        return max(inner, default=0)
    if isinstance(value, list):
        return max((_depth(v) for v in value), default=0)
    return 0


def _size(value: BaseModel) -> int:
    return len(value.model_dump_json())


# ---- recursive types ---------------------------------------------------------------


def test_the_cli_tests_an_optionally_self_recursive_output_type(tmp_path: Path) -> None:
    agent = _folder(tmp_path, "chain", CHAIN)
    result = CliRunner().invoke(cli, ["test", str(agent), "--examples", "10", "--seed", "1"])
    assert "Traceback" not in result.output and "RecursionError" not in result.output
    assert result.exit_code == 0, result.output
    assert "shortest paths reach 1/1 edges" in result.output


@pytest.mark.parametrize("name", ["Node", "Ping"])
def test_representatives_of_recursive_types_are_finite_and_nest(tmp_path: Path, name: str) -> None:
    module = _module(tmp_path, "chain", RECURSIVE)
    values = model_representatives(getattr(module, name), Constants(numbers=(3.0,)))
    assert values
    depths = [_depth(v) for v in values]
    # The recursion is unrolled (a Node in a Node), and stops on its null or empty branch.
    assert 2 <= max(depths) <= 4
    assert all(_depth(v) <= 4 for v in values)


def test_random_candidates_of_a_branching_recursive_type_stay_shallow(tmp_path: Path) -> None:
    # Three optional children, each present half of the time: unbounded, a random tree
    # grows forever one time in four.
    module = _module(tmp_path, "tree", TREE)
    found = candidates(module.Tree, Constants(numbers=(3.0,)))
    assert len(found) > 100
    assert max(_depth(v) for v in found) <= MAX_DEPTH + 1


@pytest.mark.parametrize("name", ["Node", "Ping"])
def test_drawn_values_of_recursive_types_are_finite(tmp_path: Path, name: str) -> None:
    cls = getattr(_module(tmp_path, "chain", RECURSIVE), name)
    seen: list[int] = []

    @settings(max_examples=30, database=None, suppress_health_check=list(HealthCheck))
    @given(value=models(cls))
    def check(value: BaseModel) -> None:
        assert _depth(value) <= MAX_DEPTH + 1
        seen.append(_depth(value))

    check()
    assert seen


def test_an_optional_goes_null_at_the_depth_limit_without_building_the_rest(
    tmp_path: Path,
) -> None:
    module = _module(tmp_path, "chain", RECURSIVE)
    assert repr(values_of(module.Node | None, MAX_DEPTH)) == "none()"


def test_the_cli_runs_the_recursive_agent(tmp_path: Path) -> None:
    agent = _folder(tmp_path, "chain", RECURSIVE)
    result = CliRunner().invoke(cli, ["test", str(agent), "--examples", "10", "--seed", "2"])
    assert "Traceback" not in result.output
    assert result.exit_code == 0, result.output
    assert "shortest paths reach 3/3 edges" in result.output


# ---- wide types --------------------------------------------------------------------


class _TooManyCalls(Exception):
    pass


def _counted(monkeypatch: pytest.MonkeyPatch, bound: int) -> list[int]:
    """Count the calls of `coverage.representatives` (its own recursive ones too), and stop
    a run that makes more than `bound`."""
    calls = [0]
    original = coverage.representatives

    def counting(*args: Any, **kwargs: Any) -> list[Any]:
        calls[0] += 1
        if calls[0] > bound:
            raise _TooManyCalls(calls[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(coverage, "representatives", counting)
    return calls


def test_a_wide_optional_type_is_built_in_few_calls_and_small_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 4^12 paths lead from T0 to T12: each type is built once per depth.
    module = _module(tmp_path, "wide", _wide(12, optional=True))
    calls = _counted(monkeypatch, 1_000)
    values = model_representatives(module.T0, Constants())
    assert 0 < calls[0] <= 13 * 4 * 4
    assert values and len(values) <= 1 + 4 * 48
    # Null first for an optional record: no value holds every first field's (4^12 leaves).
    assert max(_size(v) for v in values) < 2_000
    assert any(_depth(v) == 13 for v in values)


def test_the_representatives_of_a_wide_required_type_are_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every field required: each level varies its four fields, and a nested record passes
    # on at most as many values as a product of fields may hold.
    module = _module(tmp_path, "wide", _wide(5, optional=False))
    calls = _counted(monkeypatch, 1_000)
    values = model_representatives(module.T0, Constants())
    assert calls[0] <= 6 * 4 * 4
    assert 0 < len(values) <= 1 + 4 * (48 - 1)


# ---- an agent that does not compile -----------------------------------------------

BAD = """\
agent a { start d }
type T { x: string }
llm d -> T { prompt "p.j2" on T if x == null -> done on T -> done }
final done
"""


def test_compile_errors_are_printed_on_their_own_lines(tmp_path: Path) -> None:
    agent = _folder(tmp_path, "bad", BAD)
    result = CliRunner().invoke(cli, ["test", str(agent), "--examples", "5", "--seed", "1"])
    assert result.exit_code == 1
    assert "\\n" not in result.output
    lines = result.output.splitlines()
    assert lines[0] == f"error: {agent} does not compile:"
    assert any("error[E207]" in line for line in lines[1:])
    assert "  = help: only optional fields (`string?`) can be null; remove this comparison" in lines


def test_a_path_in_the_compile_error_stays_on_its_line(tmp_path: Path) -> None:
    folder = tmp_path / "x\nerror: forged"
    folder.mkdir()
    agent = _folder(folder, "bad", BAD)
    result = CliRunner().invoke(cli, ["test", str(agent), "--examples", "5", "--seed", "1"])
    assert result.exit_code == 1
    assert not any(line.startswith("error: forged") for line in result.output.splitlines())
