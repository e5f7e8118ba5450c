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


class GraphvizFailed(Exception):
    """`dot` rejected the input: a bug in twelvefold's DOT output, not in the user's agent."""


def find_dot() -> str | None:
    return shutil.which("dot")


def render_image(dot_text: str, image_format: ImageFormat) -> bytes:
    dot = find_dot()
    if dot is None:
        raise GraphvizMissing()
    # PNGs at 144 dpi stay sharp on high-density screens and in docs.
    resolution = ["-Gdpi=144"] if image_format == "png" else []
    done = subprocess.run(
        [dot, f"-T{image_format}", *resolution],
        input=dot_text.encode("utf-8"),
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip()
        raise GraphvizFailed(f"dot exited with {done.returncode}: {message}")
    return done.stdout
