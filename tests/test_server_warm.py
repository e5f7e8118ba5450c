"""A server imports the model client before it listens (found by benchmarks/server.py).

The first model call would otherwise import openai and instructor on the event loop, and
every API call would wait for it (5-7 s on the benchmark's machine). The check is what
is loaded once `serve` has built its application, in a fresh interpreter; no timing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.server import deploy_project

BUILD_APP = """
import sys
from pathlib import Path
from twelvefold.commands.serve import _app

assert "openai" not in sys.modules and "instructor" not in sys.modules
_app((sys.argv[1],), Path(sys.argv[2]), 8, True, 1.0, 15.0, None, ())
print(sorted(name for name in ("openai", "instructor") if name in sys.modules))
"""


def test_serve_loads_the_model_client_before_it_listens(tmp_path: Path) -> None:
    agent = deploy_project(tmp_path / "project")
    done = subprocess.run(
        [sys.executable, "-c", BUILD_APP, str(agent), str(tmp_path / "threads.db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "['instructor', 'openai']", done.stdout
