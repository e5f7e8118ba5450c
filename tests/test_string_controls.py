"""A control character written raw inside a string (a TAB, an ESC: U+0000 to U+001F) is E010 at
that character, with the escape to write instead, not E004's "invalid escape" with an
empty label and advice about backslashes; outside a string, an unexpected control
character is named in the `\\u000b` style every diagnostic uses."""

from __future__ import annotations

import pytest

from twelvefold.compiler import compile_text
from twelvefold.compiler.diagnostics import Diagnostic, render


def errors(text: str) -> list[Diagnostic]:
    return [d for d in compile_text(text, "a.agent").diagnostics if d.is_error]


@pytest.mark.parametrize(
    ("raw", "escape"),
    [("\t", "\\t"), ("\x1b", "\\u001b"), ("\x0b", "\\u000b"), ("\x1f", "\\u001f"),
     ("\x08", "\\b"), ("\x0c", "\\f")],
)  # fmt: skip
def test_a_raw_control_character_in_a_string_is_e010_at_it(raw: str, escape: str) -> None:
    (found,) = errors(f'agent a "ab{raw}c" {{ start done }}\nfinal done\n')
    assert found.code == "E010"
    assert (found.span.line, found.span.column, found.span.end_column) == (1, 12, 13)
    assert found.label and f"`{escape}`" in found.help
    shown = render(found, f'agent a "ab{raw}c" {{ start done }}\n')
    assert raw not in shown and "'\\x" not in shown


def test_escapes_and_other_characters_are_still_fine() -> None:
    assert not errors('agent a "a\\tb\\u001bc\x7f\x85\u2028" { start done }\nfinal done\n')


@pytest.mark.parametrize("raw", ["\x0b", "\x1c", "\u2028", "\xa0"])
def test_an_unexpected_character_is_named_as_an_escape(raw: str) -> None:
    (found,) = errors(f"agent a {{ start done {raw} }}\nfinal done\n")
    assert found.code == "E002"
    assert f"`\\u{ord(raw):04x}`" in found.message and "'" not in found.message
