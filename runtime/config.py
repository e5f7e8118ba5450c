"""A project's twelvefold configuration: `twelvefold.toml`, or `[tool.twelvefold]` in
`pyproject.toml` (the convention of Python's tools, PEP 518), found at or above a folder.

    # pyproject.toml (in twelvefold.toml, the same keys without the prefix)
    [tool.twelvefold.approvers]
    release-managers = ["carol", "dan"]

The nearest folder that has either file wins; in one folder `twelvefold.toml` wins over
`pyproject.toml` (a `pyproject.toml` without a `[tool.twelvefold]` table does not count,
so the search goes on upwards). Secrets never come from these files: webhook secrets,
passwords and tokens are read from the environment only.

The file is read anew each time `find_config` is called, so a decision checks the
approvers as they are at that moment (a revoked approver is revoked at once).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import math
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any

from .records import record

CONFIG_FILE = "twelvefold.toml"
PYPROJECT = "pyproject.toml"


class ConfigError(ValueError):
    """A configuration file that cannot be read or does not have the documented shape."""


# ---- quoting settings in messages ------------------------------------------------------

MAX_SHOWN = 200
"""The most characters of one value a message quotes (a longer one ends with `…`)."""
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_text(value: Any) -> str:
    """`value` as TOML spells it, on one line, for a message that quotes a setting:
    `true`, `"8"`, `[1, 2.5]`, `{ a = 1 }`, `1979-05-27` (Python's repr would say `True`,
    `'8'`, `datetime.date(1979, 5, 27)`). A control or other unprintable character is
    escaped (`\\n`, `\\u001B`), so a hostile value cannot start a line of its own or
    drive a terminal; a long value is cut short with `…`."""
    text = _toml(value, depth=0)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def toml_key(*parts: object) -> str:
    """A dotted key as TOML spells it: `rate_limits.gpt-4o`, `prices."my model"`."""
    return ".".join(
        str(part) if _BARE_KEY.fullmatch(str(part)) else _toml_string(str(part)) for part in parts
    )


def _toml(value: Any, depth: int) -> str:
    if depth > 8:
        return "…"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        items = [_toml(item, depth + 1) for item in value[:20]]
        return "[" + ", ".join(items + (["…"] if len(value) > 20 else [])) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        pairs = [f"{toml_key(k)} = {_toml(v, depth + 1)}" for k, v in list(value.items())[:20]]
        return "{ " + ", ".join(pairs + (["…"] if len(value) > 20 else [])) + " }"
    return _toml_string(str(value))  # not a TOML value (no reader makes one): as text


def _toml_string(text: str) -> str:
    """A TOML basic string: `"` and `\\` escaped, control and unprintable characters as
    TOML's escapes (`\\n`, `\\u001B`, `\\U0001F600` only when unprintable)."""
    out = []
    for char in text[: MAX_SHOWN + 1]:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(f"\\U{ord(char):08X}")
    return '"' + "".join(out) + '"'


@record
class Config:
    """The settings in force for an agent; empty when no file configures twelvefold."""

    path: Path | None = None
    """The file they came from."""
    digest: str | None = None
    """The first 16 hex digits of the SHA-256 of that file's bytes."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """The whole table: the top level of twelvefold.toml, or `[tool.twelvefold]`."""

    @property
    def approvers(self) -> Mapping[str, tuple[str, ...]]:
        """Groups of people who may decide approvals: group name -> people."""
        table = self.settings.get("approvers", {})
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"{self.path}: `approvers` must be a table of group = [people], "
                f"not {toml_text(table)}"
            )
        groups: dict[str, tuple[str, ...]] = {}
        for group, people in table.items():
            if not isinstance(people, list) or not all(isinstance(p, str) for p in people):
                raise ConfigError(
                    f"{self.path}: {toml_key('approvers', group)} must be a list of names, "
                    f"not {toml_text(people)}"
                )
            groups[str(group)] = tuple(people)
        return groups

    @property
    def allow_stdlib(self) -> tuple[str, ...]:
        """Standard-library modules that tools may name, e.g.
        `[tool.twelvefold.tools] allow_stdlib = ["json"]`. None by default: a tool such as
        `"sys:exit"` or `"code:interact"` is refused (see runtime/tools.py)."""
        table = self.settings.get("tools", {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"{self.path}: `tools` must be a table, not {toml_text(table)}")
        names = table.get("allow_stdlib", [])
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise ConfigError(
                f"{self.path}: `tools.allow_stdlib` must be a list of module names, "
                f"not {toml_text(names)}"
            )
        return tuple(names)

    @property
    def reference(self) -> str | None:
        """How a decision records the configuration that allowed it: `path#digest`."""
        return None if self.path is None else f"{self.path}#{self.digest}"


@functools.lru_cache(maxsize=1024)
def stdlib_module(reference: str) -> str | None:
    """The standard-library top-level module a tool's `module:function` names, or None
    (`sys.stdlib_module_names` and CPython's test modules, `TEST_MODULES`; such a tool
    needs `Config.allow_stdlib`)."""
    top = reference.partition(":")[0].partition(".")[0]
    return top if top in sys.stdlib_module_names or top in TEST_MODULES else None


TEST_MODULES = frozenset(
    {
        *("test", "_ctypes_test", "_testbuffer", "_testcapi", "_testclinic"),
        *("_testimportmultiple", "_testinternalcapi", "_testmultiphase", "_testsinglephase"),
        *("_testexternalinspection", "_testlimitedcapi", "_xxtestfuzz", "_xxsubinterpreters"),
        *("_xxinterpchannels", "_xxinterpqueues", "xxlimited", "xxlimited_35", "xxsubtype"),
    }
)
"""CPython's test modules (3.11 to 3.13), installed with its standard library but left
out of `sys.stdlib_module_names` by design ("test modules are excluded", its docs):
`test.support.os_helper:rmtree` or `_testcapi:fatal_error` is no more the user's own
function than `os:abort`. tests/test_runtime_toolcalls.py checks every module in the
running Python's own folders against this and the list above."""


SPECIAL_MODULES = {
    "__main__": "the module Python runs as the program",
    "__init__": "a package's own module",
    "sitecustomize": "a module Python runs as it starts",
    "usercustomize": "a module Python runs as it starts",
    "conftest": "a module pytest runs as it collects tests",
    "setup": "a package's build script, which packaging tools run",
}
"""Module names that Python, pytest or packaging tools treat specially: running one as a
tool's module has side effects, and a generated module of that name would have them too.
Each with why (E118, E122)."""


@functools.lru_cache(maxsize=1024)
def special_module(reference: str) -> tuple[str, str] | None:
    """(module, why) when a dotted module name, or the module of a `module:function`, is
    one Python or its tools treat specially: `__main__` or another `__dunder__` part
    anywhere in it, or a top-level `sitecustomize`, `conftest`, `setup` (SPECIAL_MODULES)."""
    parts = reference.partition(":")[0].split(".")
    # Compared without case: on macOS's and Windows's file systems `Conftest.py` is the
    # file `conftest.py`.
    for part in parts:
        if part.lower() in ("__main__", "__init__"):
            return part, SPECIAL_MODULES[part.lower()]
        if len(part) > 4 and part.startswith("__") and part.endswith("__"):
            return part, "a name Python reserves for its own (`__dunder__`)"
    if parts[0].lower() in SPECIAL_MODULES:
        return parts[0], SPECIAL_MODULES[parts[0].lower()]
    return None


def find_config(start: Path) -> Config:
    """The configuration for files in `start` (a folder, or a file whose folder is used).

    Raises `ConfigError` when the nearest configuration file is not valid TOML.
    """
    folder = start if start.is_dir() else start.parent
    for candidate in [folder.resolve(), *folder.resolve().parents]:
        found = _read(candidate / CONFIG_FILE, tool_table=False) or _read(
            candidate / PYPROJECT, tool_table=True
        )
        if found is not None:
            return found
    return Config()


def _read(path: Path, *, tool_table: bool) -> Config | None:
    # Only a name that is not there at all means "no configuration here". A link to
    # nothing, a folder or a pipe in its place is a configuration gone wrong: read as
    # none, the search would go on to defaults that let anyone with a token decide.
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise ConfigError(f"{path}: a link to a file that is not there") from None
        return None
    except NotADirectoryError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{path}: not a file (a configuration file is a regular file)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    # Read at every decision (a revoked approver is refused at once), parsed only when the
    # bytes changed: the server asks for its policy many times a second.
    digest = hashlib.sha256(data).hexdigest()[:16]
    key = (path, tool_table, digest)
    if key not in _PARSED:
        if len(_PARSED) >= 64:
            _PARSED.clear()
        _PARSED[key] = _parse(path, data, digest, tool_table=tool_table)
    return _PARSED[key]


_PARSED: dict[tuple[Path, bool, str], Config | None] = {}


def _parse(path: Path, data: bytes, digest: str, *, tool_table: bool) -> Config | None:
    import tomllib  # here, not at the top: only a project with a configuration file needs it

    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:  # tomllib reads nested tables and arrays by recursion
        raise ConfigError(
            f"{path}: tables or arrays nested too deep for a configuration (hundreds of "
            "levels): nothing in it nests more than a few"
        ) from None
    table: Any = document
    if tool_table:
        table = document.get("tool", {})
        table = table.get("twelvefold") if isinstance(table, dict) else None
        if table is None:
            return None
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.twelvefold] must be a table, not {toml_text(table)}")
    return Config(path, digest, table)


__all__ = [
    "CONFIG_FILE",
    "Config",
    "ConfigError",
    "find_config",
    "special_module",
    "stdlib_module",
    "toml_key",
    "toml_text",
]
