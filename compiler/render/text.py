"""User text on its way into a picture: every character a picture cannot hold, or that
would hide or reorder the text around it, is drawn as its `\\uXXXX` escape.

A string in an `.agent` file may hold any character its escapes spell (`\\u0001`, `\\f`,
`\\ufffe`, a lone `\\ud800`): `check` accepts them, and they reach the pictures in a
description, a model name or a guard. Graphviz reads HTML-like labels as XML, which
forbids most C0 controls, U+FFFE/U+FFFF and surrogates (`dot` refuses the whole graph);
a DOT or Mermaid file printed to a terminal would let an ESC drive it; a bidi override
reverses what the reader sees, and a tag character or a Hangul filler hides text. Shown
as their escapes, they are visible in every format, and `to_dot`/`to_mermaid` need no
special case for them.
"""

from __future__ import annotations

from twelvefold.runtime.terminal import hidden_characters, written_out

_UNSHOWABLE = hidden_characters(keep="\t\n", more="\ufffe\uffff")
"""Every character a person cannot see or that changes how the text around it reads
(runtime/terminal.py's `HIDDEN`, as the inbox and the terminal show them) but tab and
line feed, and the two characters XML 1.0 forbids besides the controls and surrogates
already in it."""


def drawable(text: str) -> str:
    """`text` with every character in `_UNSHOWABLE` written as its `\\uXXXX` escape
    (`written_out`); tabs and line feeds stay (each renderer lays a line break out its own
    way)."""
    return _UNSHOWABLE.sub(written_out, text)
