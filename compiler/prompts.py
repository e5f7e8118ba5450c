"""Where prompt templates live, and reading them (the one place the compiler touches files).

LANGUAGE.md: prompt paths resolve under `--prompts DIR`; by default the first `prompts/`
folder beside the .agent file or in one of its parents, else `prompts/` in the current
directory.
"""

from __future__ import annotations

from pathlib import Path

from twelvefold.runtime.loading import PROMPTS_FOLDER as PROMPTS_FOLDER
from twelvefold.runtime.loading import find_prompts_dir as _find_from

from .program import PromptFile


def find_prompts_dir(agent_file: Path) -> Path:
    """The prompts folder for an .agent file: the runtime's rule (runtime/loading.py), which
    must be the same rule, started from the file's folder."""
    return _find_from(agent_file.resolve().parent)


class PromptDirectory:
    """Loads prompt templates from one folder, refusing names that climb out of it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, name: str) -> PromptFile | None:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            return None
        return PromptFile(name=name, path=path, text=path.read_text(encoding="utf-8"))
