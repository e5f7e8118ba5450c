"""Diagnostics: one value type for every stage, rendered for people or as JSON.

A stage never prints. It returns its findings as `Diagnostic` values; the CLI renders
them in the rustc/Elm style (`path:line:col: error[E101]: message`, the source line, a
caret under the span, `help:`) or as JSON for editors and tools.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from twelvefold.runtime.terminal import columns, one_line


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file. Lines and columns start at 1; `end_column` is exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int

    @staticmethod
    def point(line: int, column: int) -> Span:
        return Span(line, column, line, column + 1)

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


UNKNOWN_SPAN = Span(1, 1, 1, 1)


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"
    """A finding the file acknowledged on purpose (e.g. `# trusts model: tier`, E504)."""


@dataclass(frozen=True, slots=True)
class Label:
    """A secondary place that helps explain a diagnostic ("first declared here")."""

    span: Span
    message: str


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    code: str
    message: str
    path: str
    span: Span
    label: str = ""
    help: str = ""
    notes: tuple[Label, ...] = field(default=())

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            "path": self.path,
            "line": self.span.line,
            "column": self.span.column,
            "end_line": self.span.end_line,
            "end_column": self.span.end_column,
            "label": self.label,
            "help": self.help,
            "notes": [
                {"line": n.span.line, "column": n.span.column, "message": n.message}
                for n in self.notes
            ],
        }


class CompilerBug(Exception):
    """An internal error: not the user's fault, and reported as such."""

    def __init__(self, message: str) -> None:
        super().__init__(
            f"internal compiler error: {message}\n"
            "This is a bug in twelvefold; please report it with the .agent file that caused it."
        )


def error(
    code: str, message: str, path: str, span: Span, *, label: str = "", help: str = ""
) -> Diagnostic:
    return Diagnostic(Severity.ERROR, code, message, path, span, label, help)


def warning(
    code: str, message: str, path: str, span: Span, *, label: str = "", help: str = ""
) -> Diagnostic:
    return Diagnostic(Severity.WARNING, code, message, path, span, label, help)


def note(
    code: str, message: str, path: str, span: Span, *, label: str = "", help: str = ""
) -> Diagnostic:
    return Diagnostic(Severity.NOTE, code, message, path, span, label, help)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.is_error for d in diagnostics)


def sort_key(d: Diagnostic) -> tuple[str, int, int, str]:
    return (d.path, d.span.line, d.span.column, d.code)


# ---- rendering ---------------------------------------------------------------

LINE_BREAK = re.compile(r"\r\n|\r|\n")
"""What ends a line of a .agent file, as Python reads source files: `\\n`, `\\r\\n`, `\\r`.
The parser counts lines by it (`normalize_newlines` before lexing) and every diagnostic
shows lines split by it, so a position and the line shown always agree; a form feed or
U+2028 in a comment is a character of its line, as in Python."""


def normalize_newlines(text: str) -> str:
    """`text` with each `\\r\\n` and `\\r` written `\\n` (lines and columns are unchanged)."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def source_lines(text: str) -> list[str]:
    """The lines of a .agent file, split at LINE_BREAK only (not `str.splitlines`, which
    also splits at form feeds, `\\x1c`, U+0085 and U+2028), without a last empty one."""
    lines = LINE_BREAK.split(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


EXCERPT_CHARS = 120
"""The most of a source line a diagnostic shows; a longer line is cut around the span."""


def render(diagnostic: Diagnostic, source: str | None) -> str:
    """Render one diagnostic for a terminal: header, source line with a caret, notes, help.

    Every part a user controls (the path, the names and file names quoted in the message,
    label, notes and help, the source line itself) is printed through `one_line`: a line
    break, an ANSI escape or another control character comes out escaped, so it can
    neither drive the terminal nor start a line that reads as another diagnostic. The
    JSON form (`to_json`) keeps the values as they are."""
    d = diagnostic
    lines = [
        f"{one_line(d.path)}:{d.span.line}:{d.span.column}: "
        f"{d.severity.value}[{d.code}]: {one_line(d.message)}"
    ]
    shown_lines = source_lines(source) if source is not None else []
    gutter = len(str(max([d.span.line, *(n.span.line for n in d.notes)])))
    pad = " " * gutter

    def excerpt(span: Span, marker: str, text: str) -> list[str]:
        if not 1 <= span.line <= len(shown_lines):
            return []
        line = shown_lines[span.line - 1].expandtabs(1)
        last = span.end_column if span.end_line == span.line else len(line) + 1
        line, column, width = _escaped_excerpt(line, span.column, max(1, last - span.column))
        if len(line) > EXCERPT_CHARS:  # show a window around the span, not a megabyte
            start = max(0, column - 1 - EXCERPT_CHARS // 4)
            clipped = line[start : start + EXCERPT_CHARS]
            line = (
                ("…" if start else "")
                + clipped
                + ("…" if start + EXCERPT_CHARS < len(line) else "")
            )
            column = column - start + (1 if start else 0)
            width = max(1, min(width, len(line) - column + 1))
        # Under the span as a terminal draws the line: a wide character takes two
        # columns, a combining mark none.
        spanned = columns(line[column - 1 : column - 1 + width])
        underline = " " * columns(line[: column - 1]) + marker * max(1, spanned)
        suffix = f" {one_line(text)}" if text else ""
        return [
            f"{span.line:>{gutter}} | {line}",
            f"{pad} | {underline}{suffix}",
        ]

    body = excerpt(d.span, "^", d.label)
    if body:
        lines.append(f"{pad} |")
        lines.extend(body)
    for note in d.notes:
        shown_note = [f"{pad} = note: {one_line(note.message)}"]
        lines.extend(excerpt(note.span, "-", note.message) or shown_note)
    if d.help:
        lines.append(f"{pad} = help: {one_line(d.help)}")
    return "\n".join(lines)


def _escaped_excerpt(line: str, column: int, width: int) -> tuple[str, int, int]:
    """A source line through `one_line`, and the span's column and width moved to match
    (an escape is wider than the character it stands for: the caret stays under it)."""
    start = min(column - 1, len(line))
    before, spanned, after = line[:start], line[start : start + width], line[start + width :]
    shown_before, shown_spanned = one_line(before), one_line(spanned)
    if shown_before == before and shown_spanned == spanned:
        return line[: start + width] + one_line(after), column, width
    return (
        shown_before + shown_spanned + one_line(after),
        len(shown_before) + 1,
        max(1, len(shown_spanned)),
    )


def render_all(diagnostics: Sequence[Diagnostic], sources: Mapping[str, str]) -> str:
    return "\n\n".join(render(d, sources.get(d.path)) for d in diagnostics)


def render_json(diagnostics: Sequence[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in diagnostics], indent=2)


def summary(diagnostics: Sequence[Diagnostic]) -> str:
    errors = sum(d.is_error for d in diagnostics)
    notes = sum(d.severity is Severity.NOTE for d in diagnostics)
    warnings = len(diagnostics) - errors - notes

    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    counted = f"{plural(errors, 'error')}, {plural(warnings, 'warning')}"
    return f"{counted}, {plural(notes, 'note')}" if notes else counted


# ---- suggestions -------------------------------------------------------------


SUGGESTION_NAME_LIMIT = 64
"""Names longer than this get no "did you mean": a typo is short, and the distance is quadratic."""


def edit_distance(a: str, b: str, bound: int | None = None) -> int:
    """Edits from `a` to `b`: insert, delete, substitute, or swap two neighbours (`dnoe`).

    The optimal-string-alignment distance, ignoring case, since typos are what it ranks.
    With `bound`, any result above it may be returned as `bound + 1` (the search stops once
    every cell of a row exceeds it).
    """
    a, b = a.lower(), b.lower()
    rows = [list(range(len(b) + 1))] + [[i] + [0] * len(b) for i in range(1, len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            rows[i][j] = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                rows[i][j] = min(rows[i][j], rows[i - 2][j - 2] + 1)
        if bound is not None and min(rows[i]) > bound:
            return bound + 1
    return rows[len(a)][len(b)]


def _could_be_within(a: str, b: str, threshold: int) -> bool:
    """A cheap lower bound on `edit_distance(a, b)`: each edit changes the length by at most
    one and adds or removes at most one letter of each kind, so a pair that fails either
    count cannot be within `threshold`."""
    if abs(len(a) - len(b)) > threshold:
        return False
    missing = Counter(a.lower())
    missing.subtract(b.lower())
    return sum(c for c in missing.values() if c > 0) <= threshold and (
        sum(-c for c in missing.values() if c < 0) <= threshold
    )


def closest(name: str, candidates: Iterable[str], limit: int = 3) -> list[str]:
    """Known names close enough to `name` to be what the user meant, best first.

    Linear in the candidates for any name: names over SUGGESTION_NAME_LIMIT characters get
    no suggestion, and a letter-count prefilter skips candidates that cannot be close.
    """
    if len(name) > SUGGESTION_NAME_LIMIT:
        return []
    threshold = max(1, len(name) // 3)
    scored = sorted(
        (edit_distance(name, c, threshold), c)
        for c in set(candidates)
        if c != name and _could_be_within(name, c, threshold)
    )
    return [c for distance, c in scored if distance <= threshold][:limit]


def did_you_mean(name: str, candidates: Iterable[str], what: str = "") -> str:
    options = closest(name, candidates)
    if not options:
        return ""
    quoted = " or ".join(f"`{o}`" for o in options)
    return f"did you mean {quoted}?" if not what else f"did you mean {what} {quoted}?"
