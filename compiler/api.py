"""The compiler as a library: what `twelvefold check` and `twelvefold compile` do, importable."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from .check import check, no_prompts
from .codegen import generate
from .diagnostics import Diagnostic, has_errors
from .parser import parse
from .program import Program, PromptLoader
from .prompts import PromptDirectory, find_prompts_dir


@dataclass(frozen=True)
class Compilation:
    path: str
    source_text: str
    program: Program | None
    diagnostics: list[Diagnostic]
    files: dict[str, str] = field(default_factory=dict)
    """Generated modules by file name; empty when there are errors."""

    @property
    def ok(self) -> bool:
        return not has_errors(self.diagnostics)


def compile_text(
    text: str,
    path: str = "<agent>",
    *,
    load_prompt: PromptLoader = no_prompts,
    generate_code: bool = True,
    approver_groups: Collection[str] | None = None,
    config_name: str = "",
) -> Compilation:
    """Parse, check and, without errors, generate. Reads prompts only through `load_prompt`;
    `approver_groups` are those the project's configuration defines (None: it has none)."""
    source, diagnostics = parse(text, path)
    if has_errors(diagnostics):
        return Compilation(path, text, None, diagnostics)
    program, found = check(
        source,
        load_prompt=load_prompt,
        source_text=text,
        approver_groups=approver_groups,
        config_name=config_name,
    )
    diagnostics = diagnostics + found
    files: dict[str, str] = {}
    if program is not None and generate_code and not has_errors(diagnostics):
        files = generate(program)
    return Compilation(path, text, program, diagnostics, files)


def compile_file(
    path: Path,
    *,
    prompts_dir: Path | None = None,
    generate_code: bool = True,
    display_path: str | None = None,
) -> Compilation:
    """Compile one .agent file, with prompts resolved as LANGUAGE.md says and the approvers
    groups of the project's configuration (twelvefold.toml or [tool.twelvefold] at or above
    the file; docs/runtime.md) checked."""
    text = path.read_text(encoding="utf-8")
    loader = PromptDirectory(prompts_dir or find_prompts_dir(path))
    groups, config_name = configured_approver_groups(path)
    return compile_text(
        text,
        display_path or str(path),
        load_prompt=loader,
        generate_code=generate_code,
        approver_groups=groups,
        config_name=config_name,
    )


def configured_approver_groups(path: Path) -> tuple[frozenset[str] | None, str]:
    """The approvers groups the configuration for `path` defines, and its file name; None
    without a configuration, or with one that cannot be read (the runtime then refuses
    decisions that need it, saying why)."""
    from twelvefold.runtime.config import ConfigError, find_config

    try:
        config = find_config(path)
        groups = frozenset(config.approvers)
    except ConfigError:
        return None, ""
    if config.path is None:
        return None, ""
    return groups, config.path.name
