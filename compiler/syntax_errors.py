"""Syntax errors in a user's words: what was expected, what was found, which block is open.

Lark reports terminal names (`RBRACE`, `NAME`); users should read `}` and "a name".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from twelvefold.grammar import grammar_text

from .diagnostics import Diagnostic, Span, error, source_lines

_TERMINAL_WORDS = {
    "NAME": "a name",
    "STRING": 'a string in double quotes ("...")',
    "NUMBER": "a number",
    "DURATION": "a duration such as `30s` or `5m`",
    "ARROW": "`->`",
    "COMPARE": "a comparison (`==`, `!=`, `<`, `<=`, `>`, `>=`)",
    "OPTIONAL": "`?`",
    "$END": "the end of the file",
}

# Blocks a user opens with `{`, by the keyword that starts their header.
_BLOCK_KEYWORDS = ("agent", "type", "llm", "tool", "approval", "human", "context")
KEYWORDS = frozenset(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"', grammar_text()))
"""Every word the grammar (grammar/agent.lark) writes as a literal: `"agent"`, `"on"`, ...
The lexer is contextual, so most of them are keywords only where the parser expects
them; compiler/checks/names.py decides which ones a name really cannot be."""


@dataclass(frozen=True)
class OpenBlock:
    header: str
    line: int


def describe_syntax_error(
    exc: UnexpectedInput, text: str, path: str, keyword_text: Callable[[str], str | None]
) -> Diagnostic:
    def word(terminal: str) -> str:
        if terminal in _TERMINAL_WORDS:
            return _TERMINAL_WORDS[terminal]
        literal = keyword_text(terminal)
        return f"`{literal}`" if literal is not None else terminal.lower()

    if (isinstance(exc, UnexpectedToken) and exc.token.type == "$END") or isinstance(
        exc, UnexpectedEOF
    ):
        return _end_of_file(text, path, exc, word)
    if isinstance(exc, UnexpectedToken):
        return _unexpected_token(exc, text, path, word)
    if isinstance(exc, UnexpectedCharacters):
        return _unexpected_character(exc, text, path, word)
    span = Span.point(exc.line or 1, exc.column or 1)  # pragma: no cover - lark raises the above
    return error("E001", "syntax error", path, span)  # pragma: no cover


def _expected(exc: UnexpectedInput, word: Callable[[str], str]) -> str:
    names = getattr(exc, "accepts", None) or getattr(exc, "expected", None) or set()
    words = sorted({word(t) for t in names}, key=lambda w: (not w.startswith("`"), w))
    if not words:
        return "nothing more"
    if len(words) == 1:
        return words[0]
    if len(words) > 8:
        words = [*words[:8], "…"]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _inside(block: OpenBlock | None) -> str:
    return f" in `{block.header}` (opened at line {block.line})" if block else ""


def _unexpected_token(
    exc: UnexpectedToken, text: str, path: str, word: Callable[[str], str]
) -> Diagnostic:
    token = exc.token
    found = str(token)
    line, column = token.line or 1, token.column or 1
    span = Span(line, column, token.end_line or line, token.end_column or column + len(found))
    block = _open_block(text, token.start_pos or 0)
    expected = getattr(exc, "accepts", None) or exc.expected
    expected_text = _expected(exc, word)
    help_ = f"write {expected_text} here"
    label = f"expected {expected_text}"

    if "DURATION" in expected and token.type == "NUMBER":
        return _not_a_duration(text, token.start_pos or 0, line, column, path)
    if "NAME" in expected and found in KEYWORDS:
        return error(
            "E001",
            f"`{found}` is a keyword and cannot be used as a name here",
            path,
            span,
            label="a keyword",
            help=f"choose another name, such as `{found}_step` or `my_{found}`",
        )
    if "ARROW" in expected and found in {"=>", "=", ":"}:
        help_ = "transitions are written with `->`"
    return error(
        "E001",
        f"unexpected `{found}`{_inside(block)}",
        path,
        span,
        label=label,
        help=help_,
    )


_WRITTEN_DURATION = re.compile(
    r"(?P<sign>-?)(?=[0-9])(?P<number>[0-9]+(?:\.[0-9]*)?)(?P<exponent>[eE][-+]?[0-9]+)?(?P<unit>[A-Za-z_]*)"
)
_LANGUAGE_UNITS = ("ms", "s", "m", "h", "d")
_LONGEST_SHOWN = 12
"""The most digits before or after the point a fix writes out (`1e999999s` is not
shown as a million of them)."""
_UNITS = "units: ms, s, m, h, d"
_UNIT_WORDS = {
    **dict.fromkeys(("msec", "msecs", "millisecond", "milliseconds"), ("ms", 1)),
    **dict.fromkeys(("sec", "secs", "second", "seconds"), ("s", 1)),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), ("m", 1)),
    **dict.fromkeys(("hr", "hrs", "hour", "hours"), ("h", 1)),
    **dict.fromkeys(("day", "days"), ("d", 1)),
    **dict.fromkeys(("w", "wk", "week", "weeks"), ("d", 7)),
}
"""Units a person may write for a duration, as the language writes them (and how many)."""


def _not_a_duration(text: str, start: int, line: int, column: int, path: str) -> Diagnostic:
    """E001 for a number where a duration belongs, the fix read from the whole word
    written there: `5` (no unit), `5min` (another unit's name), `-5s`, `1e3s`."""
    written = _WRITTEN_DURATION.match(text, start)
    assert written is not None  # (called where a number, or `-` and a number, starts)
    word, sign, unit = written.group(0), written.group("sign"), written.group("unit")
    exponent = written.group("exponent") or ""
    # A huge exponent (`1e99999999999999999999s`) is more than Decimal takes: shown as written.
    number = Decimal(written.group("number") + (exponent if len(exponent) <= 8 else "e99"))
    unit = unit if len(unit) <= 20 else unit[:20] + "…"
    span = Span(line, column, line, column + len(word))

    def problem(message: str, help: str) -> Diagnostic:
        return error("E001", message, path, span, label="a duration", help=help)

    if sign:
        fixed = word[1:] if unit in _LANGUAGE_UNITS and not written.group("exponent") else "5s"
        return problem("a duration cannot be negative", f"write how long it is, such as `{fixed}`")
    shown = _plain(number) if abs(number.adjusted()) <= _LONGEST_SHOWN else None
    if unit and unit not in _LANGUAGE_UNITS:
        if unit not in _UNIT_WORDS or shown is None:
            return problem(
                f"`{unit}` is not a unit of duration",
                f"write the number with one of the {_UNITS}, such as `{shown or 5}s`",
            )
        meant, times = _UNIT_WORDS[unit]
        return problem(
            f"`{unit}` is not a unit of duration",
            f"write `{_plain(number * times)}{meant}` ({_UNITS})",
        )
    if written.group("exponent"):
        return problem(
            f"`{word}` is not a duration",
            f"write `{shown}{unit or 's'}` (a duration has no exponent)"
            if shown is not None
            else f"write the number in digits, with one of the {_UNITS}",
        )
    return problem(f"`{word}` needs a unit", f"write `{shown or word}s` for seconds ({_UNITS})")


def _plain(number: Decimal) -> str:
    """`number` as a duration writes it: digits and a point, no exponent (`1E+3` → 1000)."""
    return format(number.normalize(), "f")


def _unexpected_character(
    exc: UnexpectedCharacters, text: str, path: str, word: Callable[[str], str]
) -> Diagnostic:
    line, column = exc.line or 1, exc.column or 1
    position = exc.pos_in_stream or 0
    char = text[position] if position < len(text) else ""
    block = _open_block(text, position)
    expected_text = _expected(exc, word) if getattr(exc, "allowed", None) else ""
    if char == '"':
        rest = text[position:].split("\n", 1)[0]
        return error(
            "E002",
            "this string is not closed on its line",
            path,
            Span(line, column, line, column + len(rest)),
            label="string starts here",
            help='strings are one line long; close it with `"` (write a newline as \\n)',
        )
    allowed = getattr(exc, "allowed", None) or set()
    if "DURATION" in allowed and _WRITTEN_DURATION.match(text, position):
        return _not_a_duration(text, position, line, column, path)
    help_ = f"write {expected_text} here" if expected_text else "remove this character"
    if char == "=" and text[position : position + 2] == "=>":
        help_ = "transitions are written with `->`"
    # Named as a string's escape would write it (`\u000b`), as every diagnostic shows them.
    shown = char if char.isprintable() and char.strip() else f"\\u{ord(char):04x}"
    return error(
        "E002",
        f"unexpected character `{shown}`{_inside(block)}",
        path,
        Span.point(line, column),
        label=f"expected {expected_text}" if expected_text else "",
        help=help_,
    )


def _end_of_file(
    text: str, path: str, exc: UnexpectedInput, word: Callable[[str], str]
) -> Diagnostic:
    lines = source_lines(text) or [""]
    last_line = len(lines)
    span = Span.point(last_line, len(lines[-1]) + 1)
    block = _open_block(text, len(text))
    if block is not None:
        return error(
            "E003",
            f"the file ends inside `{block.header}` (opened at line {block.line})",
            path,
            span,
            label="end of file",
            help=f"close `{block.header}` with `}}`",
        )
    return error(
        "E003",
        "the file ends in the middle of a declaration",
        path,
        span,
        label=f"expected {_expected(exc, word)}",
        help="finish the declaration",
    )


_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"?|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|\{|\}|\n|.', re.S)


def _open_block(text: str, until: int) -> OpenBlock | None:
    """The innermost block still open at offset `until`: its header (`tool deploy`) and line."""
    stack: list[OpenBlock] = []
    recent: list[tuple[str, int]] = []  # words since the last brace, with their lines
    line = 1
    for match in _TOKEN.finditer(text, 0, until):
        token = match.group(0)
        if token == "\n":
            line += 1
        elif token == "{":
            header = _header(recent)
            stack.append(OpenBlock(header[0], header[1] or line))
            recent = []
        elif token == "}":
            if stack:
                stack.pop()
            recent = []
        elif token[0].isalpha() or token[0] == "_":
            recent.append((token, line))
    return stack[-1] if stack else None


def _header(words: list[tuple[str, int]]) -> tuple[str, int]:
    for index in range(len(words) - 1, -1, -1):
        keyword, line = words[index]
        if keyword in _BLOCK_KEYWORDS:
            if keyword == "context":
                return "context", line
            name = words[index + 1][0] if index + 1 < len(words) else ""
            return f"{keyword} {name}".strip(), line
    return "block", words[-1][1] if words else 0
