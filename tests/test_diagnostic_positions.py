"""Line and column numbers and the source line a diagnostic shows agree on what ends a
line: `\\n`, `\\r\\n` and `\\r` (as Python reads source files), and nothing else. A form
feed, a vertical tab, U+0085 or U+2028 in a comment or a string is a character of its
line (shown escaped), never a line break that would show another line."""

from __future__ import annotations

import pytest

from twelvefold.compiler import compile_text
from twelvefold.compiler.diagnostics import render

LINES = [
    "agent a { start decide }  # a comment",
    'type Done "a description" { message: string }',
    "llm decide -> Done {",
    '  prompt "ok.j2"',
    "  on Done -> dne",
    "}",
    "final done(Done)",
]


def report(text: str) -> str:
    result = compile_text(text, "a.agent")
    (found,) = [d for d in result.diagnostics if d.code == "E104"]
    return render(found, result.source_text)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_each_kind_of_line_ending_gives_the_same_position_and_line(newline: str) -> None:
    shown = report(newline.join(LINES) + newline)
    assert shown.startswith("a.agent:5:14: error[E104]: `decide` goes to `dne`, which")
    assert "5 |   on Done -> dne\n  |              ^^^ no such state" in shown


@pytest.mark.parametrize("odd", ["\u2028", "\u0085", "\x0c", "\x0b", "\x1c"])
def test_other_separators_in_comments_and_strings_are_not_line_breaks(odd: str) -> None:
    lines = list(LINES)
    lines[0] = lines[0].replace("a comment", f"a{odd}comment")
    if odd.isprintable() or odd == "\u2028":  # a control character in a string is E010
        lines[1] = lines[1].replace("a description", f"a{odd}description")
    shown = report("\n".join(lines) + "\n")
    assert shown.startswith("a.agent:5:14: error[E104]")
    assert "5 |   on Done -> dne\n  |              ^^^ no such state" in shown


def test_a_line_with_a_separator_is_shown_whole_with_it_escaped() -> None:
    text = "\n".join(LINES).replace("-> dne", "-> dne  # a\u2028b") + "\n"
    assert "5 |   on Done -> dne  # a\\u2028b\n  |              ^^^" in report(text)


@pytest.mark.parametrize(
    "before",
    ["注文", "🚀🚀", "e\u0301e\u0301", "ｆｕｌｌ", "x" * 130 + "注文"],
    ids=["CJK", "emoji", "combining marks", "full-width", "a long line"],
)
def test_the_caret_stands_under_the_span_after_wide_and_combining_characters(
    before: str,
) -> None:
    """rt19 F6: a line with CJK text or emoji before the span put the caret one column to
    the left for each wide character. Columns are counted as a terminal draws them (rich's
    reading of the Unicode tables is the oracle)."""
    from rich.cells import cell_len

    text = "\n".join(
        [
            "agent a { start decide }",
            f'type T {{ x: "{before}" | "b" }}',
            f'llm decide -> T {{ prompt "p.j2" on T if x == "{before}" and x == "zz" -> done'
            " on T -> done }",
            "final done",
        ]
    )
    result = compile_text(text, "a.agent")
    (found,) = [d for d in result.diagnostics if d.code == "E206"]
    shown = render(found, result.source_text).splitlines()
    line = next(s for s in shown if s.startswith("3 | "))[4:]
    carets = next(s for s in shown if s.lstrip(" |").startswith("^"))[4:]
    start = len(carets) - len(carets.lstrip())
    # The line as a terminal lays it out: a wide character, then a column it also takes.
    cells = "".join(c + " " * (cell_len(c) - 1) for c in line if cell_len(c) > 0)
    assert cells[start : start + carets.count("^")] == '"zz"', (line, carets)
