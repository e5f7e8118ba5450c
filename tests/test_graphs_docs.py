"""The pictures committed under docs/images/ are what `make graphs` renders now."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from docs import make_graphs

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's `dot` is not on PATH (`make system-deps` installs Debian graphviz)",
)


def test_the_committed_pictures_are_current() -> None:
    assert make_graphs.stale() == [], "run `make graphs` and commit docs/images/"


@needs_dot
def test_the_staleness_check_catches_an_outdated_or_edited_picture(tmp_path: Path) -> None:
    make_graphs.write_all(tmp_path)
    assert make_graphs.stale(tmp_path) == []

    dot = tmp_path / "deploybot.dot"
    dot.write_text(dot.read_text().replace("max_errors", "max_mistakes"))
    png = tmp_path / "calculator.png"
    png.write_bytes(png.read_bytes() + b"\0")
    (tmp_path / "deploybot-thread.mmd").unlink()
    guide = tmp_path / "graphs.md"
    guide.write_text(make_graphs.GUIDE.read_text().replace("flowchart TD", "flowchart LR"))

    problems = make_graphs.stale(tmp_path, guide)
    assert "deploybot.dot differs from what the renderer makes now" in problems
    assert "calculator.png is not the image `make graphs` rendered" in problems
    assert "deploybot-thread.mmd differs from what the renderer makes now" in problems
    assert "graphs.md's mermaid block is not the current calculator.mmd" in problems
    assert len(problems) == 4
