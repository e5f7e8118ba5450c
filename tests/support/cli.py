"""The `twelvefold` command run as a user runs it: a new process, from a folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def twelvefold(
    *arguments: str, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m twelvefold ARGUMENTS` in `cwd`, its output captured as text. The timeout
    (seconds) fails a test whose command hangs (a FIFO read, a server that should have
    refused to start) rather than holding the suite."""
    return subprocess.run(
        [sys.executable, "-m", "twelvefold", *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
