"""User text on its way into a picture: every character a picture cannot hold, or that
would hide or reorder the text around it, is drawn as its `\\uXXXX` escape.

A string in an `.agent` file may hold any character its escapes spell (`\\u0001`, `\\f`,
`\\ufffe`, a lone `\\ud800`): `check` accepts them, and they reach the pictures in a
description, a model name or a guard. Graphviz reads HTML-like labels as XML, which
forbids most C0 controls, U+FFFE/U+FFFF and surrogates (`dot` refuses the whole graph);
a DOT or Mermaid file printed to a terminal would let an ESC drive it; a bidi override
reverses what the reader sees. Shown as their escapes, they are visible in every format,
and `to_dot`/`to_mermaid` need no special case for them.
"""

from __future__ import annotations

import re

_UNSHOWABLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
    "\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff\ufffe\uffff]"
)
"""C0 controls but tab and line break, DEL, C1 controls, invisible and bidi characters
(as the inbox shows them: server/inbox.py's `visible`), surrogates and the two
characters XML 1.0 forbids above them."""


def drawable(text: str) -> str:
    """`text` with every character in `_UNSHOWABLE` written as its `\\uXXXX` escape;
    tabs and line breaks stay (each renderer lays a line break out its own way)."""
    return _UNSHOWABLE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)
