"""Run Graphviz's `dot` to turn DOT text into SVG or PNG bytes.

The only part of the renderers with I/O: it starts a process. Graphviz is a system
package (Debian `graphviz`); when `dot` is missing the caller gets `GraphvizMissing`
with a sentence that says how to install it, never a traceback.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Literal

from twelvefold.runtime.terminal import one_line

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
    """`dot` exited with an error (or was killed). `ours` when the same `dot` draws a
    one-node graph (`_PROBE`): then it is the DOT twelvefold wrote that it refused, a bug
    in twelvefold; else Graphviz itself does not work (a broken install, a missing
    plugin), and the message says to check it. What `dot` said is quoted by its first
    line only, cut short and escaped (`one_line`): it may repeat the user's text."""

    def __init__(self, status: int, stderr: bytes, *, ours: bool) -> None:
        how = f"exited with {status}" if status > 0 else f"was killed by signal {-status}"
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        said = one_line(lines[0].strip()) if lines else ""
        if len(said) > _QUOTED:
            said = said[: _QUOTED - 1] + "…"
        quoted = f": {said}" if said else " (it printed nothing)"
        if ours:
            advice = (
                "it draws a one-node graph, so it is the DOT twelvefold wrote that it "
                "refused: this is a bug in twelvefold, please report it (--format dot "
                "prints that DOT)"
            )
        else:
            advice = (
                "it fails on a one-node graph too, so check the Graphviz install "
                "(`dot -V`, `dot -c`), or use --format dot or --format mermaid, which "
                "need nothing"
            )
        super().__init__(f"Graphviz's `dot` {how}{quoted}; {advice}")
        self.status = status
        self.ours = ours


_QUOTED = 200
"""The most characters of `dot`'s first line of stderr a message quotes."""

_PROBE = "digraph probe { a }\n"
"""A graph any working `dot` draws: what tells a broken Graphviz from DOT it refuses."""


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
    done = _run(dot, dot_text, image_format, timeout)
    if done.returncode != 0:
        raise GraphvizFailed(
            done.returncode, done.stderr, ours=_draws_a_probe(dot, image_format, timeout)
        )
    return done.stdout


def _run(
    dot: str, dot_text: str, image_format: ImageFormat, timeout: float
) -> subprocess.CompletedProcess[bytes]:
    # PNGs at 144 dpi stay sharp on high-density screens and in docs.
    resolution = ["-Gdpi=144"] if image_format == "png" else []
    try:
        return subprocess.run(
            [dot, f"-T{image_format}", *resolution],
            input=dot_text.encode("utf-8"),
            capture_output=True,
            check=False,
            timeout=timeout,  # on expiry, run() kills `dot` and waits for it
        )
    except subprocess.TimeoutExpired:
        raise GraphvizTimedOut(timeout) from None


def _draws_a_probe(dot: str, image_format: ImageFormat, timeout: float) -> bool:
    """Whether `dot` draws `_PROBE` (asked once `dot` has failed on our graph)."""
    try:
        return _run(dot, _PROBE, image_format, timeout).returncode == 0
    except (GraphvizTimedOut, OSError):
        return False
