"""Compile an .agent file and import the generated module, as a user would."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from twelvefold.compiler import compile_file
from twelvefold.runtime.loading import import_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PROMPTS = ROOT / "prompts"


def import_generated(agent_file: Path, into: Path, prompts_dir: Path | None = None) -> ModuleType:
    result = compile_file(agent_file, prompts_dir=prompts_dir or PROMPTS)
    errors = [d for d in result.diagnostics if d.is_error]
    assert not errors, errors
    ((name, source),) = result.files.items()
    into.mkdir(parents=True, exist_ok=True)
    path = into / name
    path.write_text(source)
    return import_file(path, f"_generated_{path.stem}_{abs(hash(str(into)))}")
