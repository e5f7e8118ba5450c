"""The compiler as a library: what `twelvefold check` and `twelvefold compile` do, importable."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .check import check, no_prompts
from .codegen import generate
from .diagnostics import UNKNOWN_SPAN, Diagnostic, error, has_errors
from .limits import UTF8_BOM, first_unencodable, not_utf8, read_source
from .linking import check_children, resolve_imports
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
    allow_stdlib: Collection[str] = (),
    base_dir: Path | None = None,
    agent_chain: tuple[str, ...] = (),
    prompts_of: Callable[[Path], Path] | None = None,
    recorded_prompts: str | None = None,
) -> Compilation:
    """Parse, check and, without errors, generate. Reads prompts only through `load_prompt`;
    the project's configuration comes in read (`project_settings`): `approver_groups` are
    the groups it defines (None: it has none), `allow_stdlib` the standard-library modules
    it lets tools name. Files the text names (`import`, sub-agents) are read relative to
    `base_dir` (default: the folder of `path`); `agent_chain` is the sub-agent files being
    compiled around this one, outermost first (a cycle is E134). A sub-agent's templates
    are read from `prompts_of(its file)` (default: LANGUAGE.md's nearest `prompts/`; a
    pinned version's copy gives the folders it recorded, runtime/versions.py).
    `recorded_prompts` is written into the module as `PROMPTS` (codegen.generate): where
    its templates are, relative to the folder the module goes to.

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
    folder = base_dir if base_dir is not None else Path(path).resolve().parent
    here = str((folder / Path(path).name).resolve())
    source, linked = resolve_imports(source, folder, here)
    linked += check_children(source, folder, (*agent_chain, here), prompts_of)
    diagnostics = diagnostics + linked
    try:
        program, found = check(
            source,
            load_prompt=load_prompt,
            source_text=text,
            approver_groups=approver_groups,
            config_name=config_name,
            allow_stdlib=allow_stdlib,
        )
    except PromptUnreadable as exc:
        return Compilation(path, text, None, [*diagnostics, _unreadable_prompt(exc, source)])
    diagnostics = diagnostics + found
    files: dict[str, str] = {}
    if program is not None and generate_code and not has_errors(diagnostics):
        files = generate(program, recorded_prompts)
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
    load_prompt: PromptLoader | None = None,
    agent_chain: tuple[str, ...] = (),
    prompts_of: Callable[[Path], Path] | None = None,
    module_dir: Path | None = None,
) -> Compilation:
    """Compile one .agent file, with prompts resolved as LANGUAGE.md says and the approvers
    groups of the project's configuration (twelvefold.toml or [tool.twelvefold] at or above
    the file; docs/runtime.md) checked.

    A file that cannot be read as text (not a regular file, over the size limit, not
    UTF-8) is one diagnostic in the result, never an exception; see `limits.read_source`.
    `load_prompt` replaces the prompts folder's loader (runtime/loading.py wraps it to learn
    which templates the agent uses). With `module_dir` (the folder the module is written
    to: `twelvefold compile -o`), the module records its prompts folder relative to it
    (`PROMPTS`), so it finds its templates wherever the current folder is when it runs.
    """
    shown = display_path or str(path)
    text, unreadable = read_source(path, shown)
    if unreadable:
        return Compilation(shown, text, None, unreadable)
    folder = prompts_dir or find_prompts_dir(path)
    loader = load_prompt or PromptDirectory(folder)
    return compile_text(
        text,
        shown,
        load_prompt=loader,
        generate_code=generate_code,
        base_dir=path.resolve().parent,
        agent_chain=agent_chain,
        prompts_of=prompts_of,
        recorded_prompts=None if module_dir is None else relative_folder(folder, module_dir),
        **project_settings(path)._asdict(),
    )


def relative_folder(folder: Path, base: Path) -> str:
    """`folder` as a POSIX path relative to `base`, both resolved (links followed, as the
    default prompts folder is found and as the runtime finds a module's folder), so the
    path means the same after the project is moved or checked out elsewhere; absolute
    when no relative path leads there (another drive)."""
    target, start = folder.resolve(), base.resolve()
    try:
        return Path(os.path.relpath(target, start)).as_posix()
    except ValueError:
        return Path(target).as_posix()


class ProjectSettings(NamedTuple):
    """What the compiler takes from the project's configuration (runtime/config.py)."""

    approver_groups: frozenset[str] | None = None
    """The approvers groups it defines; None without a configuration (nothing checked)."""
    config_name: str = ""
    """Its file name, as diagnostics name it."""
    allow_stdlib: tuple[str, ...] = ()
    """Standard-library modules tools may name (`[tools] allow_stdlib`)."""


def project_settings(path: Path) -> ProjectSettings:
    """The configuration for `path`, read once; empty without one, or with one that cannot
    be read (the runtime then refuses what needs it, saying why)."""
    from twelvefold.runtime.config import ConfigError, find_config

    try:
        config = find_config(path)
        groups = frozenset(config.approvers)
        allowed = config.allow_stdlib
    except ConfigError:
        return ProjectSettings()
    if config.path is None:
        return ProjectSettings()
    return ProjectSettings(groups, config.path.name, allowed)
