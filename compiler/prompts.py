"""Where prompt templates live, and reading them (the one place the compiler touches files).

LANGUAGE.md: prompt paths resolve under `--prompts DIR`; by default the first `prompts/`
folder beside the .agent file or in one of its parents, else `prompts/` in the current
directory.
"""

from __future__ import annotations

from pathlib import Path

from twelvefold.runtime.templates import confined_file

from .program import PromptFile

PROMPTS_FOLDER = "prompts"


def find_prompts_dir(agent_file: Path, cwd: Path | None = None) -> Path:
    for folder in [agent_file.resolve().parent, *agent_file.resolve().parents]:
        candidate = folder / PROMPTS_FOLDER
        if candidate.is_dir():
            return candidate
    return (cwd or Path.cwd()) / PROMPTS_FOLDER


class PromptDirectory:
    """Loads prompt templates from one folder, refusing names that climb out of it
    (runtime/templates.py's `confined_file`: the rule the runtime's loader applies too)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, name: str) -> PromptFile | None:
        path = confined_file(self.root, name)
        if path is None:
            return None
        return PromptFile(name=name, path=path, text=path.read_text(encoding="utf-8"))
