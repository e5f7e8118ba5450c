"""Where prompt templates live, and reading them (the one place the compiler touches files).

LANGUAGE.md: prompt paths resolve under `--prompts DIR`; by default the first `prompts/`
folder beside the .agent file or in one of its parents, else `prompts/` in the current
directory.
"""

from __future__ import annotations

from pathlib import Path

from twelvefold.runtime.loading import PROMPTS_FOLDER as PROMPTS_FOLDER
from twelvefold.runtime.loading import find_prompts_dir as _find_from
from twelvefold.runtime.templates import confined_file

from .limits import read_source
from .program import PromptFile


def find_prompts_dir(agent_file: Path) -> Path:
    """The prompts folder for an .agent file: the runtime's rule (runtime/loading.py), which
    must be the same rule, started from the file's folder."""
    return _find_from(agent_file.resolve().parent)


class PromptDirectory:
    """Loads prompt templates from one folder, refusing names that climb out of it
    (runtime/templates.py's `confined_file`: the rule the runtime's loader applies too)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, name: str) -> PromptFile | None:
        """The template, None when there is no such file (or a name that leads out of the
        folder); `PromptUnreadable` when there is one that cannot be read as text (not
        UTF-8, over the size limit, no permission)."""
        path = confined_file(self.root, name)
        if path is None:
            return None
        text, problems = read_source(path, name)
        if problems:
            raise PromptUnreadable(name, problems[0].message.removeprefix("this file "))
        return PromptFile(name=name, path=path, text=text)


class PromptUnreadable(Exception):
    """A prompt file exists but is not text the compiler can read."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f'prompt "{name}" {reason}')
        self.name = name
