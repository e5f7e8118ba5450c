"""Text on its way to a person: no value may drive the screen that shows it, or read
differently from what it is.

Values in a thread (model output, tool results, a person's comment, an `ask`) reach
`run`, `show`, the server's log, the inbox's pages and Slack. Printed raw, an ESC or CSI
sequence recolours or clears a terminal, an OSC 8 sequence hides a link behind innocent
text, `\\r` overwrites a line, a bidi override reverses what the reader sees (a tag
`"\\u202e3.2.1v"` reads "v1.2.3"), and a character that draws nothing (a zero width
space, a tag character, a Hangul filler) hides text or tells two values apart that look
the same. `HIDDEN` is the one definition of those characters; `for_terminal` (every
command's output and the log) and `visible` (the inbox and Slack) write each as its
`\\uXXXX` escape, and so does compiler/render/text.py's `drawable` (the pictures).
"""

from __future__ import annotations

import re
import unicodedata

_C0_CONTROLS = "\x00-\x1f"

_CONTROL_AND_FORMAT = (
    _C0_CONTROLS + "\x7f-\x9f"  # Cc
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f"  # Cf
    "\ud800-\udfff"  # Cs
    "\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd"  # Co
    "\u2028\u2029"  # Zl, Zp
)
"""The characters of the Unicode general categories Cc (controls; C1's `\\x9b` is a
one-byte CSI), Cf (format: the bidi controls of the "Trojan Source" trick, zero width
characters, tag characters), Cs (surrogates), Co (private use), Zl and Zp (line and
paragraph separators), as of Unicode 17.0 (UAX #44, "General_Category Values"; the data
in UnicodeData.txt). tests/test_hidden_characters.py checks it against the Unicode
version of the Python that runs the tests."""

_DEFAULT_IGNORABLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
)
"""Default_Ignorable_Code_Point (UAX #44; DerivedCoreProperties.txt, Unicode 17.0): the
characters a renderer draws as nothing when it has no glyph for them. Besides Cf ones,
the combining grapheme joiner U+034F, the Hangul fillers U+115F, U+1160, U+3164 and
U+FFA0, the Khmer inherent vowels U+17B4-U+17B5, the variation selectors (U+180B-U+180D,
U+180F, U+FE00-U+FE0F, U+E0100-U+E01EF), and the code points kept for more of them."""

_BLANKS = "\u2800"
"""Characters that are not ignorable but draw an empty, letter-wide cell: BRAILLE
PATTERN BLANK, used as an "invisible letter" as the Hangul fillers are."""

HIDDEN = _CONTROL_AND_FORMAT + _DEFAULT_IGNORABLE + _BLANKS
"""A character a person cannot see, or that changes how the text around it reads: the
body of a regular expression character class (`[...]`). Tab, line feed and carriage
return are in it (Cc); each boundary says which of them its layout keeps
(`hidden_characters`). Ordinary text (letters of any script, marks, emoji without
variation selectors, spaces) is not."""


def hidden_characters(keep: str = "", more: str = "") -> re.Pattern[str]:
    """A pattern matching one character of `HIDDEN` or `more`, except those in `keep`
    (C0 controls only: the line breaks and tabs a boundary lays out itself)."""
    assert all(ord(kept) < 0x20 for kept in keep), keep
    controls = "".join(f"\\x{code:02x}" for code in range(0x20) if chr(code) not in keep)
    return re.compile(f"[{controls}{HIDDEN.removeprefix(_C0_CONTROLS)}{more}]")


def written_out(found: re.Match[str]) -> str:
    """The character `found` matched as its escape: `\\uXXXX`, and one above U+FFFF as
    its UTF-16 surrogate pair (`\\udb40\\udc41` for U+E0041), as a JSON or an `.agent`
    string writes it, so an escape inside a JSON string decodes to the same character."""
    code = ord(found.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


_ON_A_TERMINAL = hidden_characters(keep="\t\n")
"""`HIDDEN` but tab and line feed: a terminal lays those out, while `\\r` returns to the
start of the line and lets what follows overwrite it."""


def for_terminal(text: str) -> str:
    """`text` with every character of `HIDDEN` but `\\t` and `\\n` written as its
    `\\uXXXX` escape (`written_out`).

    The escape is visible on a terminal, and inside a JSON string it is the same JSON
    (it decodes to the same character), so `--json` output stays exact.
    """
    return _ON_A_TERMINAL.sub(written_out, text)


_LINE_BREAKS = {"\n": "\\n", "\t": "\\t"}


def one_line(text: str) -> str:
    """`text` as one line for a terminal: `for_terminal`, and a line break or tab written
    as `\\n` / `\\t` (the escapes an `.agent` string uses), so a value (a file name, an
    identifier, a description) cannot start a line of its own and forge output such as
    `error[E101]: ...` below the real one."""
    escaped = for_terminal(text)
    if "\n" in escaped or "\t" in escaped:
        escaped = escaped.replace("\n", "\\n").replace("\t", "\\t")
    return escaped


_ON_A_PAGE = hidden_characters(keep="\t\n\r")
"""`HIDDEN` but tab and line breaks, which a page or a Slack message lays out (a comment
typed in a browser's text box ends its lines with `\\r\\n`)."""


def visible(text: str) -> str:
    """`text` with every character of `HIDDEN` but `\\t`, `\\n` and `\\r` written as its
    `\\uXXXX` escape (`written_out`): what the inbox and Slack show, where a tag
    `"\\u202e3.2.1v"` would read "v1.2.3" raw, and `"v1.2.3\\U000e0041"` would too."""
    return _ON_A_PAGE.sub(written_out, text)


def columns(text: str) -> int:
    """How many terminal columns `text` takes: East Asian wide and full-width characters
    two; marks drawn over the character before them (Unicode categories Mn and Me, which
    include variation selectors) and format characters (Cf) none; the rest one (UAX #11,
    "East Asian Width"). Text that `for_terminal` has written is what it measures."""
    return sum(
        0
        if unicodedata.category(c) in _NO_COLUMN
        else 2
        if unicodedata.east_asian_width(c) in "WF"
        else 1
        for c in text
    )


_NO_COLUMN = frozenset({"Mn", "Me", "Cf"})
