"""The generated modules: typed, lint-clean, importable, and safe from hostile input."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import ValidationError

from tests.support.generated import ROOT, import_generated
from twelvefold.compiler import PromptFile, compile_text
from twelvefold.runtime import ModelOutput

GOLDEN = ROOT / "tests" / "golden"
MODULES = sorted([*GOLDEN.glob("*/expected.py"), *GOLDEN.glob("examples/*.py")])
TOOLS = Path(sys.executable).parent


def _user_folder(tmp: Path) -> tuple[Path, list[str]]:
    """Each generated module copied into a folder with no configuration, as a user's repository
    holds it: no pyproject.toml, ruff.toml, mypy.ini or setup.cfg, here or above."""
    folder = tmp / "user"
    folder.mkdir()
    names = []
    for index, module in enumerate(MODULES):
        name = f"generated_{index}_{module.parent.name}_{module.stem}"
        (folder / f"{name}.py").write_text(module.read_text())
        names.append(name)
    above = [p for p in [folder, *folder.parents] for c in CONFIGS if (p / c).exists()]
    assert not above, f"configuration above the user's folder: {above}"
    return folder, names


CONFIGS = ("pyproject.toml", "ruff.toml", ".ruff.toml", "mypy.ini", ".mypy.ini", "setup.cfg")
CLEAN_ENV = {"PATH": str(TOOLS), "HOME": "/nonexistent"}
"""No user configuration either: ruff and mypy also read files under the home folder."""


@pytest.mark.slow
def test_generated_modules_pass_mypy_strict_without_configuration(tmp_path: Path) -> None:
    # mypy finds twelvefold.runtime as a user's mypy does: through the installed package.
    folder, names = _user_folder(tmp_path)
    result = subprocess.run(
        [str(TOOLS / "mypy"), "--strict", "--no-incremental", *(f"{n}.py" for n in names)],
        cwd=folder,
        capture_output=True,
        text=True,
        env=CLEAN_ENV,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_modules_pass_default_ruff_check_and_format(tmp_path: Path) -> None:
    # Ruff's default rules and line length: what `ruff check` does in a repository without
    # configuration (--isolated also ignores any configuration it could find).
    folder, names = _user_folder(tmp_path)
    files = [f"{n}.py" for n in names]
    checked = subprocess.run(
        [str(TOOLS / "ruff"), "check", "--isolated", "--no-cache", *files],
        cwd=folder,
        capture_output=True,
        text=True,
        env=CLEAN_ENV,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    formatted = subprocess.run(
        [str(TOOLS / "ruff"), "format", "--check", "--isolated", "--line-length", "100", *files],
        cwd=folder,
        capture_output=True,
        text=True,
        env=CLEAN_ENV,
        check=False,
    )
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_exports_are_in_the_order_ruff_expects_for_one_letter_and_numbered_names(
    tmp_path: Path,
) -> None:
    """rt19 F9: `type A` made `__all__` fail ruff's RUF022 (a one-letter name is a class
    to its isort-style sort, not a constant), and `T10` must follow `T2` (natural order)."""
    source = """
agent a "x" { start s max_steps 2 }
type A { x: string }
type T2 { x: string }
type T10 { x: string }
type B1 { a: A, t: T2, u: T10 }
llm s -> B1 { prompt "p.j2" on B1 -> f }
final f(B1)
"""
    prompt = PromptFile("p.j2", Path("p.j2"), "{{ context }}")
    result = compile_text(source, "a.agent", load_prompt=lambda name: prompt)
    assert result.ok, result.diagnostics
    (module,) = result.files.values()
    (tmp_path / "a_agent.py").write_text(module)
    checked = subprocess.run(
        [str(TOOLS / "ruff"), "check", "--isolated", "--no-cache", "a_agent.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=CLEAN_ENV,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_generated_modules_import_under_python_w_error(tmp_path: Path) -> None:
    # A fresh interpreter with every warning an error, as `python -W error` runs a user's code.
    folder, names = _user_folder(tmp_path)
    probe = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", probe, *names],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("module", MODULES, ids=lambda m: f"{m.parent.name}/{m.name}")
def test_generated_modules_import_without_warnings(module: Path, tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"golden_{module.parent.name}", module)
    assert spec and spec.loader
    loaded = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec.loader.exec_module(loaded)
    assert set(loaded.AGENT.states) == set(loaded._ACTIONS)


@pytest.fixture(scope="module")
def tricky(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    case = GOLDEN / "tricky_names"
    return import_generated(case / "input.agent", tmp_path_factory.mktemp("t"), case / "prompts")


def test_hostile_strings_stay_data(tricky: ModuleType) -> None:
    assert (
        tricky.AGENT.description == 'Quotes " and \\ backslashes; """ triple quotes and a\nnewline'
    )
    assert tricky.Request.__doc__ == 'ends with a quote"'
    schema = tricky.Request.model_json_schema()
    assert schema["properties"]["type"]["enum"] == ['a"b', "c'd", "\u2028"]


def test_fields_named_like_keywords_keep_their_names_on_the_wire(tricky: ModuleType) -> None:
    wire = {
        "from": "me",
        "from_": "also me",
        "model_config": "x",
        "model_dump": "d",
        "json": True,
        "json_": 3,
        "_x": 1,
        "x_": 2,
        "type": "c'd",
    }
    request = tricky.Request.model_validate(wire)
    assert request.from__ == "me" and request.from_ == "also me" and request.class_ is None
    assert (request.json__, request.json_, request.x, request.x_) == (True, 3, 1, 2)
    assert request.model_dump(by_alias=True, exclude_none=True) == wire  # nothing merged
    assert set(tricky.Request.model_json_schema()["properties"]) == {*wire, "class"}


def test_types_named_like_runtime_names_and_builtins_are_renamed(tricky: ModuleType) -> None:
    assert tricky.AGENT.types == {
        "Request": tricky.Request,
        "State": tricky.State_,
        "dict": tricky.dict_,
        "Out": tricky.Out,
        "Event": tricky.Event_,
        "reduce": tricky.reduce_,
        "_ACTIONS": tricky._ACTIONS_,
        "_d_action": tricky._d_action_,
        "__all__": tricky.all_,
        "pydantic": tricky.pydantic_,
    }
    assert callable(tricky._d_action) and isinstance(tricky._ACTIONS, dict)
    for name, cls in tricky.AGENT.types.items():
        assert cls.model_json_schema()["title"] == name


def test_fields_named_like_what_a_class_body_reads_keep_their_types(tricky: ModuleType) -> None:
    out = tricky.Out.model_validate({"float": 1.5, "Field": "f", "str": "s", "Literal": 1})
    assert (out.float_, out.Field_, out.str_, out.Literal_) == (1.5, "f", "s", 1)
    with pytest.raises(ValidationError):
        tricky.Out.model_validate({"float": "not a number"})
    nested = tricky.Out.model_validate({"State": {"value": 1}})
    assert isinstance(nested.State__, tricky.State_)


def test_unknown_keys_are_errors_at_every_level(tricky: ModuleType) -> None:
    with pytest.raises(ValidationError, match="extra"):
        tricky.Out.model_validate({"State": {"value": 1, "surprise": 2}})
    with pytest.raises(ValidationError, match="extra"):
        tricky.Out.model_validate({"surprise": 2})


def test_guard_with_negative_number_and_membership(tricky: ModuleType) -> None:
    state = tricky.initial_state(
        tricky.Request.model_validate(
            {"from": "a", "model_config": "b", "json": False, "type": "c'd"}
        )
    )

    def route(value: float) -> str:
        event = ModelOutput(step="decide", output=tricky.State_(value=value))
        return str(tricky.reduce(state, event).step)

    assert route(0.0) == "done"
    assert route(2.0) == "finish_list"  # excluded by `not (value in [2, 3])`
    assert route(-2.0) == "finish_list"


@pytest.fixture(scope="module")
def triage(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    case = GOLDEN / "guards"
    return import_generated(case / "input.agent", tmp_path_factory.mktemp("g"), case / "prompts")


@pytest.mark.parametrize(
    ("ticket", "target"),
    [
        ({"severity": 3, "customer": {"tier": "enterprise", "name": "Acme"}}, "page"),
        ({"severity": 2, "customer": {"tier": "enterprise", "name": "Acme"}}, "file"),
        # A null optional field makes a comparison false instead of raising.
        ({"severity": 5, "customer": None}, "file"),
        ({"severity": 1, "customer": None, "note": "call me"}, "page"),
        ({"severity": 1, "customer": {"tier": "free"}, "urgent": True}, "page"),
    ],
)
def test_guards_over_optional_fields(
    triage: ModuleType, ticket: dict[str, object], target: str
) -> None:
    value = triage.Ticket.model_validate({"tags": [], "urgent": False, **ticket})
    state = triage.reduce(triage.initial_state("t"), ModelOutput(step="classify", output=value))
    assert state.step == target


def test_a_name_cannot_inject_code() -> None:
    # Strings go through literals; an identifier can only be an identifier (the grammar's NAME).
    source = """
agent a "x\\"); import os; os.system(\\"echo pwned" { start s max_steps 2 }
type Out "\\"\\"\\"\\nimport os\\n" { v: "\\"); import os #" }
llm s -> Out { prompt "p.j2" on Out -> f }
final f(Out)
"""
    prompt = PromptFile("p.j2", Path("p.j2"), "{{ context }}")
    result = compile_text(source, "a.agent", load_prompt=lambda name: prompt)
    assert result.ok, result.diagnostics
    (module,) = result.files.values()
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(ast.parse(module))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "collections.abc", "typing", "pydantic", "twelvefold.runtime"}
    calls = {
        ast.unparse(node.func) for node in ast.walk(ast.parse(module)) if isinstance(node, ast.Call)
    }
    assert not any("system" in call for call in calls)


def test_types_named_like_generated_names_run(tricky: ModuleType) -> None:
    """`type _d_action` beside a state `d`, `type _ACTIONS`, `type reduce`: the module's own
    functions and tables are untouched, so a thread runs through the state `d`."""
    request = tricky.Request.model_validate(
        {"from": "a", "model_config": "b", "json": False, "type": "c'd"}
    )
    state = tricky.initial_state(request)
    out = tricky.Out.model_validate({"float": 2.0})
    moved = tricky.reduce(state, ModelOutput(step="decide", output=out))
    assert moved.step == "d"
    action = tricky.next_action(moved)
    assert action.function == "tricky_tools:d" and action.output is tricky.reduce_


def test_step_and_edge_kinds_are_the_runtimes() -> None:
    # Defined once, in runtime/spec.py; the compiler's step classes and edges use them.
    from typing import get_args

    from twelvefold.compiler import nodes as n
    from twelvefold.compiler.program import EdgeKind
    from twelvefold.runtime import spec

    assert n.StepKind is spec.StepKind and EdgeKind is spec.EdgeKind
    kinds = {cls.__dataclass_fields__["kind"].default for cls in get_args(n.Step)}
    assert kinds == set(get_args(spec.StepKind))
