"""Every name the generated module binds at its top level (its imports, `AGENT`, `PROMPTS`,
`reduce`, ...) may also be a declared type's, field's, state's or literal's name: the
module still imports, runs its reducer and passes default `ruff check` and `mypy --strict`.

The names are found by parsing a generated module that uses every optional part of the
template (secret fields, literal unions, described and renamed fields, a recorded prompts
folder), not from the compiler's own list, so a name the template binds later is tested
as soon as a module binds it."""

from __future__ import annotations

import ast
import subprocess
import warnings
from pathlib import Path

import pytest

from tests.test_codegen import CLEAN_ENV, CONFIGS, TOOLS
from twelvefold.compiler import PromptFile, compile_text
from twelvefold.runtime import ModelOutput
from twelvefold.runtime.loading import import_file

EVERY_PART = """agent every { start decide }
type Out "described" {
  from: string? "renamed and described"
  kind: "a" | "b"
  key: string secret
}
llm decide -> Out { prompt "p.j2" on Out -> done }
final done(Out)
"""


def _prompt(name: str) -> PromptFile:
    return PromptFile(name=name, path=Path(name), text="{{ context }}")


def _compile(source: str) -> str:
    result = compile_text(source, "every.agent", load_prompt=_prompt, recorded_prompts="prompts")
    assert result.ok, [d.message for d in result.diagnostics]
    ((_, text),) = result.files.items()
    return text


def _own_names(text: str) -> set[str]:
    """The names a module binds at its top level, but its classes and per-state functions."""
    bound: set[str] = set()
    for node in ast.parse(text).body:
        if isinstance(node, ast.ImportFrom | ast.Import):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_decide_"):
            bound.add(node.name)
        elif isinstance(node, ast.Assign):
            bound |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            bound.add(node.target.id)
    return bound


OWN_NAMES = sorted(_own_names(_compile(EVERY_PART)))


def _named_like_everything(names: list[str]) -> str:
    """One agent in which each name is a type, a field of it, a literal and a state."""
    lines = ["agent clash { start decide }"]
    for name in names:
        lines.append(
            f'type {name} "described" {{ {name}: string? "described", '
            f'kind: "{name}" | "other", key: string? secret }}'
        )
    outputs = " | ".join(names)
    rules = " ".join(f"on {name} -> {name}" for name in names)
    lines.append(f'llm decide -> {outputs} {{ prompt "p.j2" {rules} }}')
    lines += [f"final {name}({name})" for name in names]
    return "\n".join(lines) + "\n"


def test_the_probe_module_binds_the_templates_optional_names() -> None:
    # The probe really uses the optional parts, or the test below would test less.
    assert {"Annotated", "Literal", "Field", "SECRET", "PROMPTS", "AGENT"} <= set(OWN_NAMES)


@pytest.fixture(scope="module")
def clashing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("user")
    above = [p for p in [folder, *folder.parents] for c in CONFIGS if (p / c).exists()]
    assert not above, f"configuration above the user's folder: {above}"
    (folder / "clash.py").write_text(_compile(_named_like_everything(OWN_NAMES)))
    return folder


def test_types_fields_and_states_named_like_the_modules_own_names_run(clashing: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = import_file(clashing / "clash.py", "_clash_own_names")
    assert module.PROMPTS == "prompts"
    for name in OWN_NAMES:
        declared = module.AGENT.types[name]
        output = declared.model_validate({name: "x", "kind": name, "key": "k"})
        state = module.reduce(module.initial_state("hi"), ModelOutput(step="decide", output=output))
        assert state.step == name and state.status == "finished", name


def test_the_module_passes_default_ruff_check(clashing: Path) -> None:
    checked = subprocess.run(
        [str(TOOLS / "ruff"), "check", "--isolated", "--no-cache", "clash.py"],
        cwd=clashing,
        capture_output=True,
        text=True,
        env=CLEAN_ENV,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.slow
def test_the_module_passes_mypy_strict(clashing: Path) -> None:
    result = subprocess.run(
        [str(TOOLS / "mypy"), "--strict", "--no-incremental", "clash.py"],
        cwd=clashing,
        capture_output=True,
        text=True,
        env=CLEAN_ENV,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_fields_named_like_a_models_metaclass_attributes_stay_required_fields(
    tmp_path: Path,
) -> None:
    """Found by a red team: `mro` and `register` are attributes of BaseModel's metaclass,
    not of BaseModel (`dir(BaseModel)` lacks them); a field so named shadowed them (pydantic
    warned), dropped out of the schema's required fields and defaulted to a bound method."""
    from pydantic import BaseModel, ValidationError

    names = sorted(n for n in dir(type(BaseModel)) if not n.startswith("_"))
    assert {"mro", "register"} <= set(names)
    fields = ", ".join(f"{name}: string" for name in names)
    source = (
        f"agent meta {{ start decide }}\ntype Out {{ {fields} }}\n"
        'llm decide -> Out { prompt "p.j2" on Out -> done }\nfinal done(Out)\n'
    )
    (tmp_path / "meta.py").write_text(_compile(source))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = import_file(tmp_path / "meta.py", "_meta_field_names")
    declared = module.AGENT.types["Out"]
    assert sorted(declared.model_json_schema()["required"]) == names
    with pytest.raises(ValidationError):
        declared.model_validate({})
    value = declared.model_validate({name: name for name in names})
    assert value.model_dump(by_alias=True) == {name: name for name in names}
