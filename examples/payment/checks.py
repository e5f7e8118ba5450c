"""payment's check before dispatch: a note that goes to a customer carries no links.

A model that read a hostile order (or was told to by one) could slip a phishing link into
the thank-you note; the note is refused before it is sent, and the model is asked again
with the reason in its context (docs/language.md, "Checks before dispatch").
"""

from __future__ import annotations

import re
from typing import Protocol

LINK = re.compile(r"(https?://|www\.|\]\(|<a\s)", re.IGNORECASE)


class NoteLike(Protocol):
    text: str


def no_links(note: NoteLike) -> str | None:
    """None for a note without links; otherwise why it is refused."""
    if LINK.search(note.text):
        return "the note must not contain links: write the thanks in plain words"
    return None
