"""docs/diagnostics.md documents every code the compiler can emit, and is up to date."""

from __future__ import annotations

import re
from pathlib import Path

from docs.make_diagnostics import ENTRIES, PAGE, page

ROOT = Path(__file__).parent.parent
CODE_IN_SOURCE = re.compile(r"""["']([EW]\d{3})["']""")
DOCUMENTED = re.compile(r"^### ([EW]\d{3}):", re.M)


def emitted_codes() -> set[str]:
    return {
        code
        for path in (ROOT / "compiler").rglob("*.py")
        for code in CODE_IN_SOURCE.findall(path.read_text(encoding="utf-8"))
    }


def documented_codes() -> set[str]:
    return set(DOCUMENTED.findall(PAGE.read_text(encoding="utf-8")))


def test_every_code_in_the_compiler_is_documented() -> None:
    emitted = emitted_codes()
    assert {"E001", "E101", "E501", "W902"} <= emitted  # the scan finds codes at all
    assert emitted - documented_codes() == set()
    assert emitted - set(ENTRIES) == set()


def test_every_documented_code_has_an_invalid_program() -> None:
    for code in documented_codes():
        if ENTRIES[code].file is not None:
            continue  # a code about the file itself: tests/test_cli_input.py
        assert list((ROOT / "tests" / "invalid").glob(f"{code}_*.agent")), code


def test_every_documented_code_is_one_the_compiler_emits() -> None:
    assert documented_codes() - emitted_codes() == set()


def test_the_page_is_generated_from_the_current_compiler() -> None:
    assert PAGE.read_text(encoding="utf-8") == page(), "run `python -m docs.make_diagnostics`"
