"""`--json` prints one JSON document on stdout, whatever the user's tools print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NOISY = """
agent noisy { input string  start say }
type Out { v: int }
tool say -> Out = "noisy_tools:say" { next done }
final done(Out)
"""
TOOLS = """
def say():
    print("hello from the tool")
    return {"v": 1}
"""


def test_a_tool_that_prints_cannot_corrupt_run_json(tmp_path: Path) -> None:
    (tmp_path / "noisy.agent").write_text(NOISY)
    (tmp_path / "noisy_tools.py").write_text(TOOLS)
    twelvefold = Path(sys.executable).parent / "twelvefold"
    done = subprocess.run(
        [str(twelvefold), "run", "noisy.agent", "--input", "go", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)  # the whole of stdout is the one document
    assert view["status"] == "finished" and view["output"] == {"v": 1}
    assert "hello from the tool" in done.stderr
