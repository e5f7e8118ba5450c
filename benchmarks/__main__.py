"""`make bench`: run every benchmark module's `main()` in turn (benchmarks/*.py)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

HELPERS = {"synthetic"}  # modules that build inputs rather than measure


def main() -> None:
    folder = Path(__file__).parent
    found = pkgutil.iter_modules([str(folder)])
    names = sorted(m.name for m in found if m.name not in HELPERS and not m.name.startswith("_"))
    chosen = sys.argv[1:] or names
    for name in chosen:
        module = importlib.import_module(f"benchmarks.{name}")
        module.main()


if __name__ == "__main__":
    main()
