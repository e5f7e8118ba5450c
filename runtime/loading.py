"""Loading an agent to run: a `.agent` file (compiled on the fly, cached), a generated
module's file path, or an importable module name.

Compiled modules are written to `<cache>/<stem>-<hash>.py`, where the hash covers the
`.agent` text, the twelvefold version and the compiler's own files (its sources, templates
and grammar: a changed compiler under an unchanged version number must not serve modules
it would no longer generate), so an unchanged agent is never compiled twice and the
compiler is not even imported on that path. Beside each module, `<stem>-<hash>.prompts.json`
lists the templates its compilation read, so the agent's version (runtime/versions.py) is
known without compiling again.

The cache is in the project (`.twelvefold/cache/`), which a repository can ship: a module
found there is code someone else may have written. So each module (with its list of
templates) is signed, `<stem>-<hash>.sig`, with a key only this user can read
(runtime/usercache.py), and imported only when its signature is this user's: from the
text that was verified, never read again from disk. Any other module is compiled again.

`load_version` gets a thread's pinned reducer back from the sources a store kept.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import os
import posixpath
import re
import stat
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic_core import from_json, to_json

from .localfiles import read_regular_file, replace_file
from .loop import Agent
from .terminal import one_line
from .usercache import cache_key, signature, signed
from .versions import (
    AgentSources,
    AgentVersion,
    every_stdlib_module,
    materialized,
    prompts_in_copy,
    root_of_copy,
    version_of,
)

DEFAULT_CACHE = Path(".twelvefold") / "cache"
PROMPTS_FOLDER = "prompts"


class AgentLoadError(Exception):
    """The agent could not be loaded: a missing file, compile errors, a broken module."""


class AgentMissing(AgentLoadError):
    """A thread's agent is no longer where the thread recorded it (the project moved, the
    file was deleted or renamed): the caller must name it (`agent=`, `--agent PATH`)."""


# ---- where a thread's agent is ----------------------------------------------------------
# A thread records the place its agent was loaded from (ThreadInfo.origin) so that any
# later process loads the same agent. A file's place is recorded relative to the folder
# of the thread store (docs/runtime.md, "Where a thread finds its agent"): the store is
# the one place every command is given, it moves with the project in the default layout
# (.twelvefold/threads.db inside it), and its folder does not change meaning when the
# current directory or a configuration file does.


def is_file_reference(origin: str) -> bool:
    """Whether an agent reference names a file (`.agent` or `.py`) rather than a module."""
    return origin.endswith((".agent", ".py"))


def recorded_place(origin: str, base: Path | None) -> str:
    """What a thread records for an agent loaded from `origin` (an absolute file path or
    a module name): a file as a POSIX path relative to `base` (the thread store's folder),
    a module name as it is. Stays absolute when there is no `base` (a store in memory) or
    no relative path leads there (another drive)."""
    if base is None or not is_file_reference(origin) or not Path(origin).is_absolute():
        return origin
    try:
        return Path(os.path.relpath(origin, base.resolve())).as_posix()
    except ValueError:
        return origin


def recorded_agent(origin: str, base: Path | None) -> str:
    """The agent reference a thread's recorded place means now: a relative file path is
    joined to `base` (the thread store's folder; the current directory without one); an
    absolute path (rows written before places were relative) or a module name is kept."""
    if not is_file_reference(origin) or Path(origin).is_absolute() or base is None:
        return origin
    # Lexically: `base` is resolved, so a `..` step leaves the folder it names.
    return os.path.normpath(base.resolve() / origin)


PromptsOf = Callable[[Path], Path]
"""An `.agent` file's path -> the prompts folder its templates are read from."""


def default_prompts_of(agent_file: Path) -> Path:
    """LANGUAGE.md's rule for a file given no `--prompts`: the nearest `prompts/`."""
    return find_prompts_dir(agent_file.parent)


def load_agent(
    reference: str | Path | ModuleType,
    *,
    cache_dir: Path | None = None,
    prompts_dir: Path | None = None,
    prompts_of: PromptsOf = default_prompts_of,
) -> Agent:
    """`prompts_dir` is the agent's own prompts folder (`--prompts`); `prompts_of` gives
    it (when `prompts_dir` is None) and its sub-agents' (a pinned copy's are recorded)."""
    if isinstance(reference, ModuleType):
        return _from_module(reference, reference.__name__, prompts_dir)
    text = str(reference)
    if text.endswith(".agent"):
        return _from_agent_file(Path(text), cache_dir or DEFAULT_CACHE, prompts_dir, prompts_of)
    if text.endswith(".py"):
        path = Path(text).resolve()
        if not path.is_file():
            raise AgentLoadError(f"no such file: {one_line(text)}")
        # Named by the file's place and content: two modules with one file name (or one
        # file edited between loads) never share an entry in sys.modules.
        digest = hashlib.sha256(f"{path}\n".encode() + path.read_bytes()).hexdigest()[:16]
        module = import_file(path, f"_twelvefold_{path.stem}_{digest}")
        return _from_module(module, str(path), prompts_dir)
    try:
        module = importlib.import_module(text)
    except ImportError as exc:
        raise AgentLoadError(f"cannot import agent module `{one_line(text)}`: {exc}") from exc
    return _from_module(module, text, prompts_dir)


def _from_agent_file(
    path: Path, cache_dir: Path, prompts_dir: Path | None, prompts_of: PromptsOf
) -> Agent:
    if not path.is_file():
        what = "not a regular file" if path.exists() else "no such file"
        raise AgentLoadError(f"{what}: {one_line(str(path))}")
    path = path.resolve()
    prompts_dir = prompts_dir or prompts_of(path)
    target, names, generated = _compiled(path, cache_dir, prompts_dir, prompts_of)
    digest = target.stem.rsplit("-", 1)[1]
    module = import_file(target, f"_twelvefold_{path.stem}_{digest}", generated)
    tree = _tree(path, prompts_dir, names, cache_dir, prompts_of)
    return Agent(
        module=module,
        origin=str(path),
        directory=path.parent,
        prompts_dir=prompts_dir,
        version=version_of(tree, compiler_version()),
    )


def _compiled(
    path: Path, cache_dir: Path, prompts_dir: Path, prompts_of: PromptsOf
) -> tuple[Path, list[str], str]:
    """The generated module of the `.agent` file `path` (absolute) under `cache_dir`,
    compiled unless this user's twelvefold wrote it there already, the prompt templates
    its compilation read, and the module's text (to import: verified, not read again)."""
    from twelvefold import __version__

    # Hashed as bytes, in chunks: a file that is not UTF-8 or is huge is the compiler's to
    # refuse (E007, E008) with a diagnostic, not this line's to crash on or to hold whole.
    hasher = hashlib.sha256(f"{__version__}\n{compiler_fingerprint()}\n".encode())
    _hash_file(hasher, path)
    # The types of an `import`ed file are compiled into this module: a change there is a
    # change here (a file that cannot be read is the compiler's to report).
    imported = imported_files(path)
    for named in imported:
        hasher.update(f"\nimport {named}\n".encode())
        _hash_file(hasher, path.parent / named)
    # A sub-agent's file (and the files it imports) decides whether this one compiles: its
    # types are checked at the boundary (E130-E135). A change there, or a missing file,
    # must compile this one again rather than take a module compiled when it was there.
    # Down the whole tree: the compiler follows grandchildren too (cycles, depth: E134).
    pending, seen = [path], {path}
    while pending and len(seen) <= MAX_TREE:
        parent = pending.pop(0)
        for named in sorted(_children(parent)):
            child = Path(os.path.normpath(parent.parent / named))
            hasher.update(f"\nagent {child}\n".encode())
            _hash_file(hasher, child)
            for inner in imported_files(child):
                hasher.update(f"\nimport {inner}\n".encode())
                _hash_file(hasher, child.parent / inner)
            if child not in seen:
                seen.add(child)
                pending.append(child)
    digest = hasher.hexdigest()[:16]
    target = cache_dir / f"{path.stem}-{digest}.py"
    # JSON, not a name per line: a template's file name may hold a line break.
    used = target.with_suffix(".prompts.json")
    key = cache_key()
    usable = _no_links_to(cache_dir)
    found = _signed_files(key, target, used) if usable else None
    names = _names_in(found[1]) if found is not None else None
    if found is not None and names is not None:
        return target, names, found[0].decode("utf-8")
    # Not compiled yet, its list of templates is unreadable, or not signed by this user.
    generated, names = _compile(path, prompts_dir, prompts_of)
    if usable:
        # A folder at its name, a full disk: it runs from memory (the cache never stops it).
        with contextlib.suppress(OSError):
            _write_signed(key, target, generated, ((used, to_json(names).decode()),))
    return target, names, generated


def _no_links_to(folder: Path) -> bool:
    """Whether the compile cache `folder` is no symbolic link, nor (given relative, as
    `.twelvefold/cache`) any folder on the way to it: a repository may ship one, to a
    folder elsewhere, and nothing is read or written through it (docs/runtime.md)."""
    steps = [folder] if folder.is_absolute() else [folder, *folder.parents]
    return not any(os.path.islink(step) for step in steps)


def _signed_files(key: bytes | None, target: Path, *beside: Path) -> list[bytes] | None:
    """The bytes of `target` and the files `beside` it, when its signature file says this
    user's twelvefold wrote them all (`key` signed them) and the module is UTF-8; else
    None (missing, changed, or written by someone else: a module a repository ships)."""
    if key is None:
        return None  # no key to check with: nothing found on disk is trusted
    # Each a regular file, not followed through a link, opened without blocking, and not
    # larger than any module: a cache a repository ships may hold a link to /dev/zero or a
    # FIFO at these names (read whole, or waited on, they would end or hang the command).
    try:
        sig = read_regular_file(target.with_suffix(".sig"), follow_links=False)
        expected = sig.decode("ascii").strip()
        contents = [read_regular_file(file, follow_links=False) for file in (target, *beside)]
        contents[0].decode("utf-8")
    except (OSError, ValueError):
        return None
    return contents if signed(key, expected, target.name, *contents) else None


def _write_signed(
    key: bytes | None, target: Path, content: str, beside: tuple[tuple[Path, str], ...] = ()
) -> None:
    """Write `target` (and each file and its text in `beside`), then their signature."""
    pairs = [(target, content), *beside]
    for file, text in pairs:
        _write_atomically(file, text)
    if key is not None:
        parts = [text.encode("utf-8") for _, text in pairs]
        _write_atomically(target.with_suffix(".sig"), signature(key, target.name, *parts))


def _tree(
    path: Path, prompts_dir: Path, names: list[str], cache_dir: Path, prompts_of: PromptsOf
) -> list[AgentSources]:
    """The `.agent` file `path` and every sub-agent below it (each once, at most
    MAX_TREE files: the compiler refuses deeper or cyclic chains, E134), each with the
    prompts and imports its compilation read: what its version holds. A sub-agent is
    compiled here (into the cache) to learn which templates it reads."""
    tree = [AgentSources(path, prompts_dir, names, imported_files(path))]
    seen = {path}
    for agent in tree:
        if len(tree) > MAX_TREE:
            break
        for named in sorted(_children(agent.file)):
            child = Path(os.path.normpath(agent.file.parent / named))
            if child in seen or not child.is_file():
                continue  # a cycle or a missing file: the compiler has refused it already
            seen.add(child)
            child_prompts = prompts_of(child)
            _, child_names, _ = _compiled(child, cache_dir, child_prompts, prompts_of)
            tree.append(AgentSources(child, child_prompts, child_names, imported_files(child)))
    return tree


def load_version(
    version: AgentVersion,
    *,
    origin: str,
    directory: Path | None,
    cache_dir: Path | None = None,
) -> Agent:
    """The agent `version` holds (verified by whoever read it from a store), compiled by
    the installed compiler from its own sources and prompts, written out under
    `cache_dir/versions/`. Its tools are looked up in `directory` (the agent's folder as it
    is now) as for any agent: tools are the project's Python, not part of a version."""
    from twelvefold.compiler import compile_text
    from twelvefold.compiler.prompts import PromptDirectory

    folder = materialized(version, cache_dir or DEFAULT_CACHE)
    main = folder / version.main
    prompts = prompts_in_copy(version, folder, main)  # never the project's, as it is now
    stamp = hashlib.sha256(f"{compiler_version()}\n{version.digest}".encode()).hexdigest()[:16]
    target = folder / f"{version.name}-{stamp}.py"
    key = cache_key()
    found = _signed_files(key, target)
    if found is not None:
        generated = found[0].decode("utf-8")
    else:
        result = compile_text(
            version.files[version.main],
            version.main,
            base_dir=main.parent,  # what it names is stored as on disk (runtime/versions.py)
            load_prompt=PromptDirectory(prompts),
            allow_stdlib=every_stdlib_module(),
            prompts_of=functools.partial(prompts_in_copy, version, folder),
        )
        if not result.ok:
            from twelvefold.compiler.diagnostics import render_all

            report = render_all(result.diagnostics, {result.path: result.source_text})
            raise AgentLoadError(
                f"agent version {version.digest[:16]} ({version.main}) does not compile with "
                f"this twelvefold ({compiler_version()}):\n{report}"
            )
        ((_, generated),) = result.files.items()
        _write_signed(key, target, generated)
    module = import_file(target, f"_twelvefold_{version.name}_v{stamp}", generated)
    return Agent(
        module=module,
        origin=origin,
        directory=directory,
        prompts_dir=prompts,
        version=version,
        sources=main.parent,
    )


def load_pinned_child(parent: Agent, name: str, cache_dir: Path | None) -> Agent:
    """The sub-agent `name` (as the parent's `agent` step names it) of a parent running a
    pinned copy (`parent.sources`): read from that copy, with the prompts folder the
    version recorded for it, and itself marked as a copy, so its own sub-agents come from
    the copy too."""
    assert parent.version is not None and parent.sources is not None
    root = root_of_copy(parent.version, parent.sources)
    path = Path(os.path.normpath(parent.sources / name))
    prompts_of = functools.partial(prompts_in_copy, parent.version, root)
    child = load_agent(path, cache_dir=cache_dir, prompts_of=prompts_of)
    return replace(child, sources=path.parent)


def compiler_version() -> str:
    """The twelvefold version and the compiler's fingerprint: `0.9.0+1f2e3d4c5b6a7980`."""
    from twelvefold import __version__

    return f"{__version__}+{compiler_fingerprint()}"


IMPORT_LINE = re.compile(rb'^[ \t]*import[ \t]+"([^"\\\n]{1,400})"', re.MULTILINE)
"""An `import "FILE"` line, as bytes (the file is not decoded here)."""

CHILD_LINE = re.compile(
    rb'^[ \t]*agent[ \t]+\w+[ \t]*\([^)\n]*\)[^=\n{]*=[ \t]*"([^"\\\n]{1,400})"', re.MULTILINE
)
"""A sub-agent's step, `agent refund(RefundRequest) -> RefundOutcome = "refunds.agent"`,
as bytes: the file it names."""

MAX_TREE = 256
"""How many `.agent` files one version holds at most (a bound, not a limit anyone should
reach: sub-agents nest at most 16 levels deep, compiler/linking.py)."""


SCAN_BYTES = 1 << 20
"""How much of a file is read for its imports and its hash: the compiler's size limit
(compiler/limits.py MAX_FILE_BYTES; a larger file is refused there, E008)."""


MAX_IMPORTED_FILES = 256
"""How many imported files one agent's hash and version take in (the compiler bounds how
deep imports nest; this bounds how wide a hostile set of files can make them)."""


def imported_files(path: Path) -> list[str]:
    """Every file `path` imports, directly or through the files it imports (each named
    relative to the folder of the file that imports it), as POSIX paths relative to
    `path`'s folder (normalized: `a/../b` is `b`; one outside the folder keeps its `..`, so
    the agent runs unpinned), sorted. A cycle is followed once (the compiler reports it,
    E136); a file that is missing, unreadable or not a regular file imports nothing here
    (the compiler reports it, E130)."""
    found: set[str] = set()
    pending = [""]  # "" is `path` itself
    while pending and len(found) < MAX_IMPORTED_FILES:
        current = pending.pop()
        for named in sorted(_imports(path.parent / current if current else path)):
            relative = posixpath.normpath(posixpath.join(posixpath.dirname(current), named))
            if relative not in found:
                found.add(relative)
                pending.append(relative)
    return sorted(found)


def _imports(path: Path) -> set[str]:
    """The files `path` imports, as written (none when it is not a regular file that can
    be read: a FIFO would block)."""
    return _named(path, IMPORT_LINE)


def _children(path: Path) -> set[str]:
    """The sub-agents' files `path` names, as written (none when it cannot be read)."""
    return _named(path, CHILD_LINE)


def _named(path: Path, line: re.Pattern[bytes]) -> set[str]:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return set()
        with path.open("rb") as file:
            head = file.read(SCAN_BYTES + 1)
    except OSError:
        return set()
    return {m.group(1).decode("utf-8", "replace") for m in line.finditer(head)}


def _hash_file(hasher: Any, path: Path) -> None:
    """Feed up to SCAN_BYTES + 1 of `path`'s bytes to `hasher`, in chunks. A path that is
    not a regular file (a FIFO would block) or cannot be read adds a marker instead."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            hasher.update(b"\0not a regular file")
            return
        with path.open("rb") as file:
            left = SCAN_BYTES + 1
            while left > 0 and (chunk := file.read(min(1 << 16, left))):
                hasher.update(chunk)
                left -= len(chunk)
    except OSError:
        hasher.update(b"\0unreadable")


@functools.cache
def compiler_fingerprint() -> str:
    """A hash of the files the compiler generates modules with (`*.py`, `*.j2`, `*.lark`
    of twelvefold.compiler and twelvefold.grammar), read without importing them."""
    hasher = hashlib.sha256()
    for package in ("twelvefold.compiler", "twelvefold.grammar"):
        spec = importlib.util.find_spec(package)
        folders = (spec.submodule_search_locations or []) if spec is not None else []
        for folder in folders:
            root = Path(folder)
            for file in sorted(root.rglob("*")):
                if file.suffix in (".py", ".j2", ".lark") and file.is_file():
                    hasher.update(f"{file.relative_to(root)}\n".encode())
                    hasher.update(file.read_bytes())
    return hasher.hexdigest()[:16]


def _compile(path: Path, prompts_dir: Path, prompts_of: PromptsOf) -> tuple[str, list[str]]:
    """The generated module and the names of the templates the compilation read."""
    from twelvefold.compiler import PromptDirectory, PromptFile, compile_file
    from twelvefold.compiler.codegen import FormatterUnavailable
    from twelvefold.compiler.diagnostics import CompilerBug, render_all

    names: list[str] = []
    folder = PromptDirectory(prompts_dir)

    def load_prompt(name: str) -> PromptFile | None:
        found = folder(name)
        if found is not None and name not in names:
            names.append(name)
        return found

    try:
        result = compile_file(
            path, prompts_dir=prompts_dir, load_prompt=load_prompt, prompts_of=prompts_of
        )
    except FormatterUnavailable as exc:
        raise AgentLoadError(f"{one_line(str(path))}: {exc}") from exc
    except CompilerBug as exc:  # one line for the person; the report is for us
        raise AgentLoadError(f"{one_line(str(path))}: {exc}") from exc
    if not result.ok:
        report = render_all(result.diagnostics, {result.path: result.source_text})
        raise AgentLoadError(f"{one_line(str(path))} does not compile:\n{report}")
    ((_, generated),) = result.files.items()
    return generated, names


def _from_module(module: ModuleType, origin: str, prompts_dir: Path | None) -> Agent:
    if not hasattr(module, "AGENT") or not hasattr(module, "reduce"):
        raise AgentLoadError(f"`{one_line(origin)}` is not a generated twelvefold agent module")
    file = getattr(module, "__file__", None)
    directory = Path(file).resolve().parent if file else None
    return Agent(
        module=module,
        origin=origin,
        directory=directory,
        prompts_dir=prompts_dir
        or _recorded_prompts(module, origin, directory)
        or find_prompts_dir(directory or Path.cwd()),
    )


def _recorded_prompts(module: ModuleType, origin: str, directory: Path | None) -> Path | None:
    """The templates folder a module compiled by `twelvefold compile` records (`PROMPTS`,
    relative to the module's folder, compiler/codegen.py), or None when it records none.
    Lexically joined, as it was made (compiler/api.py `relative_folder`)."""
    recorded = getattr(module, "PROMPTS", None)
    if recorded is None or directory is None:
        return None
    if not isinstance(recorded, str) or not recorded or "\x00" in recorded:
        raise AgentLoadError(
            f"`{one_line(origin)}`: its PROMPTS is not a folder name; compile it again "
            "with `twelvefold compile`"
        )
    return Path(os.path.normpath(directory / recorded))


@dataclass(frozen=True)
class TemplateProblems:
    """What keeps a generated module's templates from rendering (`template_problems`)."""

    missing: list[str]
    """Templates the module names (a step's `prompt` or `judge`, a `render`) that the
    folder does not hold, sorted: most likely the wrong folder."""
    unloaded: dict[str, str]
    """Templates a template loads that the folder does not hold: name -> a template that
    loads it (the folder is right, the include is not)."""
    broken: dict[str, str]
    """Templates it holds that can never render (not valid Jinja2 or UTF-8, or one that
    loads itself): name -> why."""

    def __bool__(self) -> bool:
        return bool(self.missing or self.unloaded or self.broken)


def template_problems(agent: Agent) -> TemplateProblems:
    """The templates `agent` will render that its prompts folder does not hold, or that can
    never render: each `llm` step's prompt and `judge` prompt, the context's `render`
    templates, and every template those load (`{% include %}`, `{% extends %}`,
    `{% import %}`, when named by a literal). For an agent loaded from a generated module,
    whose templates no compiler has looked for in this process (a `.agent` file's are
    checked as it compiles)."""
    from .templates import TemplateBroken, confined_file, load_cycles, referenced_templates

    folder = agent.prompts_dir or Path(PROMPTS_FOLDER)
    states = agent.spec.states.values()
    roots = {s.prompt for s in states if s.prompt is not None}
    roots |= {s.judge for s in states if s.judge is not None}
    roots |= set(agent.spec.context.renders.values())
    loaded_by: dict[str, str] = {}
    loads: dict[str, set[str]] = {}
    missing: set[str] = set()
    broken: dict[str, str] = {}
    waiting = sorted(roots)
    seen = set(waiting)
    while waiting and len(loads) + len(missing) + len(broken) < MAX_TEMPLATES:
        name = waiting.pop()
        path = confined_file(folder, name)
        if path is None:
            missing.add(name)
            continue
        try:
            loads[name] = referenced_templates(path)
        except TemplateBroken as exc:
            broken[name] = str(exc)
            continue
        for child in sorted(loads[name] - seen):
            seen.add(child)
            loaded_by[child] = name
            waiting.append(child)
    for cycle in load_cycles(sorted(roots), loads):
        broken.setdefault(cycle[0], "it loads itself: " + " → ".join(cycle))
    return TemplateProblems(
        missing=sorted(missing & roots),
        unloaded={name: loaded_by[name] for name in sorted(missing - roots)},
        broken=dict(sorted(broken.items())),
    )


_ALL_FOUND: set[tuple[str, str | None, Path | None]] = set()
"""The modules (origin, reducer, prompts folder) whose templates were all found: a launch
checks once per process; one removed since fails where it renders, with its name."""

MAX_TEMPLATES = 1000
"""The most templates `template_problems` follows (a bound on a folder of includes)."""


def require_templates(agent: Agent) -> None:
    """`AgentLoadError` (one line: the folder, what is missing or broken, the fix) when a
    generated module's templates are not where it will read them, or one can never render:
    refused before a thread exists, not at its first model step. `--prompts DIR` is the
    advice only when templates the module names are missing (the wrong folder); a missing
    template that another one loads names both (the include is wrong)."""
    if agent.version is not None:
        return  # compiled from its .agent file here: the compiler found every template
    key = (agent.origin, agent.reducer, agent.prompts_dir)
    if key in _ALL_FOUND:
        return  # found complete at an earlier launch of this process (each reads them all)
    problems = template_problems(agent)
    if not problems:
        if len(_ALL_FOUND) >= 256:
            _ALL_FOUND.clear()
        _ALL_FOUND.add(key)
        return
    origin, folder = one_line(agent.origin), one_line(str(agent.prompts_dir or PROMPTS_FOLDER))
    if problems.missing:
        raise AgentLoadError(
            f"{origin}: prompt templates not found in {folder} ({_few(problems.missing)}); "
            "pass --prompts DIR, the folder it was compiled with (or compile it again with "
            "`twelvefold compile --prompts DIR`)"
        )
    if problems.unloaded:
        name, by = (one_line(part) for part in next(iter(problems.unloaded.items())))
        more = len(problems.unloaded) - 1
        others = f" (and {more} more: {_few(list(problems.unloaded)[1:])})" if more else ""
        raise AgentLoadError(
            f"{origin}: prompt template {name}, which {by} loads, is not in {folder}"
            f"{others}; add it there, or fix the name {by} loads"
        )
    name, why = next(iter(problems.broken.items()))
    raise AgentLoadError(
        f"{origin}: prompt template {one_line(name)} in {folder} cannot render "
        f"({one_line(why)}); fix it (`twelvefold check` on the .agent file shows where)"
    )


def _few(names: list[str]) -> str:
    """At most five names, then how many more."""
    shown = ", ".join(one_line(name) for name in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def require_settings(agent: Agent) -> None:
    """`AgentLoadError` (one line: the file and the setting) when the configuration the
    loop reads lazily for `agent`'s folder is not valid: its rate limits,
    `model_calls_in_flight`, `model_call_timeout` (runtime/ratelimit.py) and its prices
    (runtime/usage.py). Refused before a thread exists, not as a step failure of every
    thread at its first model step. Both are read once per process, so this costs one
    read of the configuration."""
    from .config import ConfigError
    from .ratelimit import rate_limits_for
    from .usage import prices_for

    folder = agent.directory or Path.cwd()
    try:
        rate_limits_for(folder)
        prices_for(folder)
    except ConfigError as exc:
        raise AgentLoadError(one_line(str(exc))) from None


_IMPORTING = threading.RLock()
"""Held while a generated module is imported: it is in sys.modules before it has run
(below), and another thread (a second runtime in this process) must not take it then."""


class _FromText:
    """Runs a module from text already read (and verified), named for its file: the file
    is not read again, nor its bytecode (`__pycache__`, which a repository can ship too).
    A loader by its methods (PEP 451): `importlib.abc.Loader` would import
    importlib.resources, tempfile and shutil into every process that loads an agent."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text

    def create_module(self, spec: Any) -> None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        exec(compile(self.text, str(self.path), "exec", dont_inherit=True), module.__dict__)

    def get_source(self, fullname: str) -> str:
        return self.text


def import_file(path: Path, module_name: str, text: str | None = None) -> ModuleType:
    """Import a Python file as `module_name` (once: a second call returns the same module,
    also from another thread, once the first has run it); from `text` when given (the
    file's content, already verified), not from the file."""
    with _IMPORTING:
        loaded = sys.modules.get(module_name)
        if loaded is not None:
            return loaded
        # (typeshed's loader protocol asks for the deprecated `load_module` too)
        loader: Any = _FromText(path, text) if text is not None else None
        spec = importlib.util.spec_from_file_location(module_name, path, loader=loader)
        if spec is None or spec.loader is None:
            raise AgentLoadError(f"cannot import {one_line(str(path))}")
        module = importlib.util.module_from_spec(spec)
        # Registered before running it: pydantic resolves the module's annotations through
        # sys.modules.
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise AgentLoadError(
                f"{one_line(str(path))} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        return module


def _names_in(used: bytes) -> list[str] | None:
    """The template names a compilation read, as `_compiled` wrote them beside the module;
    None when the list is not a JSON list of strings."""
    try:
        names = from_json(used)
    except ValueError:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return names


def _write_atomically(target: Path, content: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    replace_file(target, content.encode("utf-8"))


def find_prompts_dir(start: Path) -> Path:
    """The first `prompts/` folder in `start` or its parents, else `./prompts`
    (LANGUAGE.md's rule; defined here, where running an agent needs no compiler, and used
    by the compiler too)."""
    for folder in [start.resolve(), *start.resolve().parents]:
        if (folder / PROMPTS_FOLDER).is_dir():
            return folder / PROMPTS_FOLDER
    return Path.cwd() / PROMPTS_FOLDER
