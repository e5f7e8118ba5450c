"""Loading an agent to run: a `.agent` file (compiled on the fly, cached), a generated
module's file path, or an importable module name.

Compiled modules are written to `<cache>/<stem>-<hash>.py`, where the hash covers the
`.agent` text and the twelvefold version, so an unchanged agent is never compiled twice
and the compiler is not even imported on that path.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from .loop import Agent

DEFAULT_CACHE = Path(".twelvefold") / "cache"
PROMPTS_FOLDER = "prompts"


class AgentLoadError(Exception):
    """The agent could not be loaded: a missing file, compile errors, a broken module."""


def load_agent(
    reference: str | Path | ModuleType,
    *,
    cache_dir: Path | None = None,
    prompts_dir: Path | None = None,
) -> Agent:
    if isinstance(reference, ModuleType):
        return _from_module(reference, reference.__name__, prompts_dir)
    text = str(reference)
    if text.endswith(".agent"):
        return _from_agent_file(Path(text), cache_dir or DEFAULT_CACHE, prompts_dir)
    if text.endswith(".py"):
        path = Path(text).resolve()
        if not path.is_file():
            raise AgentLoadError(f"no such file: {text}")
        # Named by the file's place and content: two modules with one file name (or one
        # file edited between loads) never share an entry in sys.modules.
        digest = hashlib.sha256(f"{path}\n".encode() + path.read_bytes()).hexdigest()[:16]
        module = import_file(path, f"_twelvefold_{path.stem}_{digest}")
        return _from_module(module, str(path), prompts_dir)
    try:
        module = importlib.import_module(text)
    except ImportError as exc:
        raise AgentLoadError(f"cannot import agent module `{text}`: {exc}") from exc
    return _from_module(module, text, prompts_dir)


def _from_agent_file(path: Path, cache_dir: Path, prompts_dir: Path | None) -> Agent:
    from twelvefold import __version__

    if not path.is_file():
        what = "not a regular file" if path.exists() else "no such file"
        raise AgentLoadError(f"{what}: {path}")
    path = path.resolve()
    # Hashed as bytes, in chunks: a file that is not UTF-8 or is huge is the compiler's to
    # refuse (E007, E008) with a diagnostic, not this line's to crash on or to hold whole.
    hasher = hashlib.sha256(f"{__version__}\n".encode())
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 16), b""):
            hasher.update(chunk)
    digest = hasher.hexdigest()[:16]
    target = cache_dir / f"{path.stem}-{digest}.py"
    if not target.is_file():
        _write_atomically(target, _compile(path, prompts_dir))
    module = import_file(target, f"_twelvefold_{path.stem}_{digest}")
    return Agent(
        module=module,
        origin=str(path),
        directory=path.parent,
        prompts_dir=prompts_dir or find_prompts_dir(path.parent),
    )


def _compile(path: Path, prompts_dir: Path | None) -> str:
    from twelvefold.compiler import compile_file
    from twelvefold.compiler.codegen import FormatterUnavailable
    from twelvefold.compiler.diagnostics import render_all

    try:
        result = compile_file(path, prompts_dir=prompts_dir)
    except FormatterUnavailable as exc:
        raise AgentLoadError(f"{path}: {exc}") from exc
    if not result.ok:
        report = render_all(result.diagnostics, {result.path: result.source_text})
        raise AgentLoadError(f"{path} does not compile:\n{report}")
    ((_, generated),) = result.files.items()
    return generated


def _from_module(module: ModuleType, origin: str, prompts_dir: Path | None) -> Agent:
    if not hasattr(module, "AGENT") or not hasattr(module, "reduce"):
        raise AgentLoadError(f"`{origin}` is not a generated twelvefold agent module")
    file = getattr(module, "__file__", None)
    directory = Path(file).resolve().parent if file else None
    return Agent(
        module=module,
        origin=origin,
        directory=directory,
        prompts_dir=prompts_dir or find_prompts_dir(directory or Path.cwd()),
    )


def import_file(path: Path, module_name: str) -> ModuleType:
    """Import a Python file as `module_name` (once: a second call returns the same module)."""
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise AgentLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: pydantic resolves the module's annotations through
    # sys.modules.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise AgentLoadError(f"{path} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def _write_atomically(target: Path, content: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(content, encoding="utf-8")
    os.replace(temporary, target)


def find_prompts_dir(start: Path) -> Path:
    """The first `prompts/` folder in `start` or its parents, else `./prompts`
    (LANGUAGE.md's rule; defined here, where running an agent needs no compiler, and used
    by the compiler too)."""
    for folder in [start.resolve(), *start.resolve().parents]:
        if (folder / PROMPTS_FOLDER).is_dir():
            return folder / PROMPTS_FOLDER
    return Path.cwd() / PROMPTS_FOLDER
