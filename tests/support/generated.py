"""Compile an .agent file and import the generated module, as a user would."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from twelvefold.compiler import compile_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PROMPTS = ROOT / "prompts"


def import_generated(agent_file: Path, into: Path, prompts_dir: Path | None = None) -> ModuleType:
    result = compile_file(agent_file, prompts_dir=prompts_dir or PROMPTS)
    errors = [d for d in result.diagnostics if d.is_error]
    assert not errors, errors
    ((name, source),) = result.files.items()
    path = into / name
    path.write_text(source)
    module_name = f"_generated_{path.stem}_{abs(hash(str(into)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
