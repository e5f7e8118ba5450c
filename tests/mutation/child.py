"""One mutant's judge, in a process of its own: `twelvefold test` with its arguments.

`--spec FILE` first: FILE's text is executed as `twelvefold.runtime.spec` in place of the
module (an import hook installed before anything imports the runtime), so every generated
module imported afterwards, and the oracle's own, share the mutated reducer helpers.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SPEC_MODULE = "twelvefold.runtime.spec"


class PatchedModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `name` before the ordinary finders do, and runs `source` as its body."""

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=str(self.path))

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        module.__file__ = str(self.path)
        code = compile(self.path.read_text(encoding="utf-8"), str(self.path), "exec")
        exec(code, module.__dict__)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--spec"]:
        if any(name.startswith("twelvefold.runtime") for name in sys.modules):
            raise SystemExit("the runtime was imported before its mutant could replace it")
        sys.meta_path.insert(0, PatchedModule(SPEC_MODULE, Path(argv[1])))
        argv = argv[2:]
    from twelvefold.cli import cli

    cli.main(args=argv, prog_name="twelvefold")


if __name__ == "__main__":
    main(sys.argv[1:])
