"""CLI start-up: `twelvefold --version` and `--help` against a bare `python -c pass`.

Each figure is the median wall time of several whole processes, run interleaved (bare,
--version, --help, bare, ...) so that the machine's noise falls on all three alike.
Target (issue 9 §1): both commands within 150 ms of the bare interpreter.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 15
TARGET_MS = 150.0


def _command() -> list[str]:
    """The installed console script, as a user runs it; `python -m twelvefold` without one."""
    script = Path(sys.executable).parent / "twelvefold"
    if script.exists():
        return [str(script)]
    found = shutil.which("twelvefold")
    return [found] if found else [sys.executable, "-m", "twelvefold"]


def _wall_ms(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    commands = {
        "`python -c pass`": [sys.executable, "-c", "pass"],
        "`twelvefold --version`": [*_command(), "--version"],
        "`twelvefold --help`": [*_command(), "--help"],
    }
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(RUNS):
        for label, command in commands.items():
            times[label].append(_wall_ms(command))
    bare = statistics.median(times["`python -c pass`"])
    print("## CLI start-up (median of", RUNS, "interleaved runs)\n")
    print(f"| command | wall (ms) | over bare python (ms) | within {TARGET_MS:.0f} ms |")
    print("|---|---:|---:|---|")
    for label, samples in times.items():
        median = statistics.median(samples)
        over = median - bare
        verdict = "" if label == "`python -c pass`" else "yes" if over <= TARGET_MS else "NO"
        print(f"| {label} | {median:.0f} | {over:.0f} | {verdict} |")
    print()


if __name__ == "__main__":
    main()
