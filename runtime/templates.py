"""Every Jinja2 template a user writes renders here: in the sandbox, from the prompts folder.

Templates are data a user (or whoever edits the repository) writes, and the values they
print come from models, tools and people. Jinja2's plain `Environment` lets a template
reach Python internals (`{{ cycler.__init__.__globals__.os }}`), so prompts, `render`
templates and `ask` strings all render in `ImmutableSandboxedEnvironment`: no attribute
that starts with `_`, no function internals, and no method that mutates a list or dict
(a prompt only reads; the immutable variant also keeps a template from editing the
value it is shown, which the reducer's purity depends on). An unsafe access raises
`jinja2.exceptions.SecurityError`; the compiler reports the same accesses beforehand
(E704, compiler/checks/templates.py) with `unsafe_attribute` below.

`{% include %}`, `{% extends %}` and `{% import %}` load through `PromptsLoader`, which
only opens regular files inside the prompts folder: no absolute names, no `..`, no
symlink whose target lies outside (`confined_file` is the one rule, and the compiler's
loader uses it too).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


def confined_file(root: Path, name: str) -> Path | None:
    """The file `name` names under `root`, or None when it is missing or leads outside.

    Refused: absolute names, any `..` part, NUL, and any path whose resolved target
    (symlinks followed) is not inside the resolved `root`.
    """
    if not name or "\x00" in name or "\\" in name:
        return None
    if name.startswith("/") or any(part in ("", "..") for part in name.split("/")):
        return None
    try:
        base = root.resolve()
        path = (base / name).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a name no file system holds
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


class PromptsLoader(jinja2.BaseLoader):
    """Jinja2's loader for one prompts folder, confined by `confined_file`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        path = confined_file(self.root, template)
        if path is None:
            raise jinja2.TemplateNotFound(template)
        text = path.read_text(encoding="utf-8")
        mtime = path.stat().st_mtime
        return text, str(path), lambda: path.is_file() and path.stat().st_mtime == mtime


def sandboxed(
    loader: jinja2.BaseLoader | None = None,
    *,
    autoescape: bool = False,
    finalize: Callable[[Any], Any] | None = None,
    keep_trailing_newline: bool = False,
) -> jinja2.Environment:
    """The one way a user's template gets an environment: sandboxed, StrictUndefined."""
    return ImmutableSandboxedEnvironment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        trim_blocks=loader is not None,
        lstrip_blocks=loader is not None,
        keep_trailing_newline=keep_trailing_newline,
        autoescape=autoescape,
        finalize=finalize,
    )


@functools.cache
def _probe() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment()


def unsafe_attribute(name: str) -> bool:
    """True for an attribute the sandbox refuses on any object (`_x`, `__class__`).

    The sandbox also refuses some attributes only on certain types (a function's
    `func_globals`, a list's `append`); those depend on the value, so only the
    type-independent rule is decided before a run.
    """
    return not _probe().is_safe_attribute(object(), name, None)
