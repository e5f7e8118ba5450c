"""The compiler as a library: what `twelvefold check` and `twelvefold compile` do, importable."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from .check import check, no_prompts
from .codegen import generate
from .diagnostics import UNKNOWN_SPAN, Diagnostic, error, has_errors
from .limits import UTF8_BOM, first_unencodable, not_utf8, read_source
from .nodes import LlmStep, SourceFile
from .parser import parse
from .program import Program, PromptLoader
from .prompts import PromptDirectory, PromptUnreadable, find_prompts_dir


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
    `approver_groups` are those the project's configuration defines (None: it has none).

    A leading byte-order mark is dropped; text no UTF-8 file can hold (a lone surrogate)
    is E007, as undecodable bytes are for `compile_file`.
    """
    text = text.removeprefix(UTF8_BOM)
    unencodable = first_unencodable(text)
    if unencodable is not None:
        offset, character = unencodable
        return Compilation(path, text, None, [not_utf8(path, text[:offset], character)])
    source, diagnostics = parse(text, path)
    if has_errors(diagnostics):
        return Compilation(path, text, None, diagnostics)
    try:
        program, found = check(
            source,
            load_prompt=load_prompt,
            source_text=text,
            approver_groups=approver_groups,
            config_name=config_name,
        )
    except PromptUnreadable as exc:
        return Compilation(path, text, None, [*diagnostics, _unreadable_prompt(exc, source)])
    diagnostics = diagnostics + found
    files: dict[str, str] = {}
    if program is not None and generate_code and not has_errors(diagnostics):
        files = generate(program)
    return Compilation(path, text, program, diagnostics, files)


def _unreadable_prompt(exc: PromptUnreadable, source: SourceFile) -> Diagnostic:
    """E706 where the file names the prompt (a step's `prompt`, else a `render`)."""
    named = [
        step.prompt
        for step in source.steps
        if isinstance(step, LlmStep) and step.prompt is not None
    ]
    if source.agent is not None and source.agent.context is not None:
        named += [render.template for render in source.agent.context.renders]
    span = next((t.span for t in named if t.value == exc.name), UNKNOWN_SPAN)
    return error(
        "E706",
        str(exc),
        source.path,
        span,
        label="cannot be read",
        help="save the template as UTF-8 text of at most 1 MiB, readable by this user",
    )


def compile_file(
    path: Path,
    *,
    prompts_dir: Path | None = None,
    generate_code: bool = True,
    display_path: str | None = None,
) -> Compilation:
    """Compile one .agent file, with prompts resolved as LANGUAGE.md says and the approvers
    groups of the project's configuration (twelvefold.toml or [tool.twelvefold] at or above
    the file; docs/runtime.md) checked.

    A file that cannot be read as text (not a regular file, over the size limit, not
    UTF-8) is one diagnostic in the result, never an exception; see `limits.read_source`.
    """
    shown = display_path or str(path)
    text, unreadable = read_source(path, shown)
    if unreadable:
        return Compilation(shown, text, None, unreadable)
    loader = PromptDirectory(prompts_dir or find_prompts_dir(path))
    groups, config_name = configured_approver_groups(path)
    return compile_text(
        text,
        shown,
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
