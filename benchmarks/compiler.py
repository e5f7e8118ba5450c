"""Check + compile time of synthetic agents with 10, 100 and 1,000 states.

Whole process: `twelvefold compile` as a user runs it (interpreter start-up and imports
included). In process: parse, check and generate, best of several runs, per state.
Target (issue 2): 1,000 states in under 2 s, growth close to linear.

Then the hub (benchmarks/synthetic.py `hub_agent`): one llm step with 1,000 output types and
1,000 tools, half behind approvals — the shape that made type flow and approval dominance
quadratic. Target (issue 9): checks and compiles in under 2 s, whole process.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from twelvefold.compiler import compile_file

from .synthetic import write_hub, write_synthetic

SIZES = (10, 100, 1000)


def _best(runs: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    print("## Compiler: check + compile of synthetic agents\n")
    print("| states | whole process (s) | in process (ms) | per state (µs) | per state vs 10 |")
    print("|---:|---:|---:|---:|---:|")
    baseline = None
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            folder = Path(tmp) / str(size)
            folder.mkdir()
            agent = write_synthetic(folder, size)
            result = compile_file(agent)
            assert result.ok, [d for d in result.diagnostics if d.is_error][:3]
            states = len(result.program.steps) if result.program else size
            command = [
                sys.executable,
                "-m",
                "twelvefold",
                "compile",
                str(agent),
                "-o",
                str(folder / "out"),
            ]
            whole = _best(3, partial(subprocess.run, command, check=True, capture_output=True))
            inside = _best(3 if size >= 1000 else 10, partial(compile_file, agent))
            per_state = inside / states * 1e6
            baseline = baseline or per_state
            print(
                f"| {states} | {whole:.2f} | {inside * 1e3:.1f} | {per_state:.0f} "
                f"| {per_state / baseline:.2f}× |"
            )
    print()
    _hub()


def _hub() -> None:
    print("## Compiler: the hub (one llm step, 1,000 tools)\n")
    print("| tools | states | whole process (s) | whole process, CPU (s) | in process (ms) |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for tools in (100, 1000):
            folder = Path(tmp) / str(tools)
            folder.mkdir()
            agent = write_hub(folder, tools)
            result = compile_file(agent)
            assert result.ok, [d for d in result.diagnostics if d.is_error][:3]
            states = len(result.program.steps) if result.program else 0
            command = [sys.executable, "-m", "twelvefold", "compile", str(agent)]
            command += ["-o", str(folder / "out")]
            whole = _best(3, partial(subprocess.run, command, check=True, capture_output=True))
            cpu = _best_cpu(3, command)
            inside = _best(3, partial(compile_file, agent))
            print(f"| {tools:,} | {states:,} | {whole:.2f} | {cpu:.2f} | {inside * 1e3:.0f} |")
    print()


def _best_cpu(runs: int, command: list[str]) -> float:
    """CPU seconds (user + system) of the process and the ones it waits for (ruff), best of
    `runs`: on a shared machine this varies much less than the wall-clock time."""
    best = float("inf")
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(command, check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = min(best, used)
    return best


if __name__ == "__main__":
    main()
