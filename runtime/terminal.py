"""Text on its way to a terminal: no value may drive the terminal that shows it.

Values in a thread (model output, tool results, a person's comment, an `ask`) reach
`run`, `show` and the log notifier. Printed raw, an ESC or CSI sequence recolours or
clears the screen, an OSC 8 sequence hides a link behind innocent text, `\\r` overwrites
a line, and a bidi override reverses what the reader sees. `for_terminal` is the one
place that neutralises them; every command's output and the log channel go through it.

`visible` is its counterpart for text a person reads on another screen (the inbox's
pages, Slack messages): it also shows the characters that hide text or take no space.
"""

from __future__ import annotations

import logging
import re

_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROLS = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")
"""C0 controls but `\\t` and `\\n`, DEL, C1 controls (`\\x9b` is a one-byte CSI), Unicode
line separators and the bidi controls (the Trojan Source set)."""


def for_terminal(text: str) -> str:
    """`text` with every control character written as its `\\uXXXX` escape.

    The escape is visible on a terminal, and inside a JSON string it is the same JSON
    (it decodes to the same character), so `--json` output stays exact.
    """
    return _CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


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


class EscapingFormatter(logging.Formatter):
    """Log lines no value can drive or forge: a record's message (its arguments are values
    from threads: an error's text, a receiver's answer) as `one_line`, so a line break in
    a value cannot start a line that reads as a record of its own; a traceback keeps its
    lines, each `for_terminal`."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return for_terminal(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return for_terminal(super().formatStack(stack_info))


_HIDDEN = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
    "\u2060-\u206f\ufeff\ufff9-\ufffb]"
)
"""Characters a reader would not see, or that reorder or hide the text after them
(Unicode bidi controls: the "Trojan Source" trick). Tabs and line breaks stay."""


def visible(text: str) -> str:
    """`text` with every hidden or direction-changing character written as `\\uXXXX`
    (what the inbox and Slack show: a tag `"\\u202e3.2.1v"` reads as "v1.2.3" raw)."""
    return _HIDDEN.sub(lambda found: f"\\u{ord(found.group()):04x}", text)
