"""Run Graphviz's `dot` to turn DOT text into SVG or PNG bytes.

The only part of the renderers with I/O: it starts a process. Graphviz is a system
package (Debian `graphviz`); when `dot` is missing the caller gets `GraphvizMissing`
with a sentence that says how to install it, never a traceback.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Literal

ImageFormat = Literal["svg", "png"]

INSTALL_HINT = (
    "Graphviz's `dot` is not on PATH; SVG and PNG need it. Install Graphviz "
    "(Debian/Ubuntu: `apt-get install graphviz`, macOS: `brew install graphviz`), "
    "or use --format mermaid or --format dot, which need nothing."
)


class GraphvizMissing(Exception):
    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


DOT_TIMEOUT = 60.0
"""How long `dot` may take to lay out a picture, in seconds, by default: a graph of a few
hundred crossing edges can keep it busy for many minutes."""


class GraphvizTimedOut(Exception):
    """`dot` ran past its time limit and was stopped."""

    def __init__(self, timeout: float) -> None:
        super().__init__(
            f"Graphviz's `dot` did not finish within {timeout:g} s and was stopped (the "
            "graph is too big for it to lay out); use --format dot or --format mermaid, "
            "which need no layout, or allow it longer with --dot-timeout SECONDS"
        )
        self.timeout = timeout


class GraphvizFailed(Exception):
    """`dot` rejected the input: a bug in twelvefold's DOT output, not in the user's agent."""


def find_dot() -> str | None:
    return shutil.which("dot")


def render_image(
    dot_text: str, image_format: ImageFormat, *, timeout: float = DOT_TIMEOUT
) -> bytes:
    """The picture `dot` draws of `dot_text`; `GraphvizTimedOut` when it takes longer than
    `timeout` seconds (it is killed)."""
    dot = find_dot()
    if dot is None:
        raise GraphvizMissing()
    # PNGs at 144 dpi stay sharp on high-density screens and in docs.
    resolution = ["-Gdpi=144"] if image_format == "png" else []
    try:
        done = subprocess.run(
            [dot, f"-T{image_format}", *resolution],
            input=dot_text.encode("utf-8"),
            capture_output=True,
            check=False,
            timeout=timeout,  # on expiry, run() kills `dot` and waits for it
        )
    except subprocess.TimeoutExpired:
        raise GraphvizTimedOut(timeout) from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip()
        raise GraphvizFailed(f"dot exited with {done.returncode}: {message}")
    return done.stdout
