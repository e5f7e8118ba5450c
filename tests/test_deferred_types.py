"""A generated module's types build their validators and schemas on first use, not at
import (issue 13: importing an agent within 100 ms), and check exactly what a type built
at import checks: the same JSON schemas (the types' own and the model call's), the same
refusals. Hostile names, forward references and recursive types included."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel, ValidationError

from tests.support.generated import ROOT
from twelvefold.compiler import compile_file
from twelvefold.runtime.loading import import_file
from twelvefold.runtime.model import response_shape

SOURCES = [
    ROOT / "tests" / "golden" / "tricky_names" / "input.agent",
    *sorted((ROOT / "examples").glob("*.agent")),
]
DEFERRED = "defer_build=True"  # (the last of a config, on its line or wrapped)
BUILT = "defer_build=False"


def _compiled(agent_file: Path) -> str:
    prompts = agent_file.parent / "prompts"
    result = compile_file(agent_file, prompts_dir=prompts if prompts.is_dir() else ROOT / "prompts")
    assert not [d for d in result.diagnostics if d.is_error]
    ((_, source),) = result.files.items()
    return source


def _imported(source: str, into: Path, name: str) -> ModuleType:
    path = into / f"{name}.py"
    path.write_text(source)
    return import_file(path, f"_deferred_{name}_{abs(hash(str(into)))}")


def _types(module: ModuleType) -> dict[str, type[BaseModel]]:
    types: dict[str, type[BaseModel]] = module.AGENT.types
    return types


@pytest.mark.parametrize("agent_file", SOURCES, ids=lambda p: p.stem)
def test_deferred_types_check_what_types_built_at_import_check(
    agent_file: Path, tmp_path: Path
) -> None:
    source = _compiled(agent_file)
    assert source.count(DEFERRED) == source.count("(BaseModel):") > 0
    deferred = _imported(source, tmp_path, "deferred")
    built = _imported(source.replace(DEFERRED, BUILT), tmp_path, "built")
    assert not any(t.__pydantic_complete__ for t in _types(deferred).values())
    assert all(t.__pydantic_complete__ for t in _types(built).values())

    for name, cls in _types(deferred).items():
        assert cls.model_json_schema() == _types(built)[name].model_json_schema(), name
        assert cls.__pydantic_complete__
        with pytest.raises(ValidationError):
            cls.model_validate({"not a declared field": 1})
    for step, spec in deferred.AGENT.states.items():
        if spec.kind != "llm":
            continue
        outputs = tuple(_types(deferred)[name] for name in spec.outputs)
        twins = tuple(_types(built)[name] for name in spec.outputs)
        asked = response_shape(step, outputs).model.model_json_schema()
        assert asked == response_shape(step, twins).model.model_json_schema(), step
