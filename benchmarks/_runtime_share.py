"""The runtime's own share of an in-memory step: its CPU time per step less the reducer
alone's, measured in one process, side by side (docs/benchmarks.md, "The runtime's own
share of a step"). Not part of `make bench` (its name starts with `_`):

    .venv/bin/python benchmarks/_runtime_share.py

Each round prints the best of `THREADS` counter threads of `STEPS` actions in CPU time
for the runtime (benchmarks/runtime.py's `run_thread`), the reducer alone
(`reducer_alone`), their difference, and the bare Python loop (wall clock).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import twelvefold


def main() -> None:
    root = Path(twelvefold.__file__).resolve().parents[1]
    sys.path.insert(0, str(root))  # that copy's benchmarks/runtime.py and fixtures
    from benchmarks.runtime import COUNTER, bare_python, reducer_alone, run_thread
    from twelvefold.runtime.api import Runtime
    from twelvefold.runtime.store import MemoryStore

    os.environ.pop("COUNTER_LOG", None)  # the counter's tools are instant without it
    steps = int(os.environ.get("STEPS", "1000"))
    threads = int(os.environ.get("THREADS", "15"))
    with tempfile.TemporaryDirectory() as tmp:
        agent = Runtime(cache_dir=Path(tmp) / "cache").agent(COUNTER)
        for _ in range(int(os.environ.get("ROUNDS", "4"))):
            clock = time.process_time
            whole = min(run_thread(MemoryStore(), agent, steps, clock) for _ in range(threads))
            alone = min(reducer_alone(agent, steps, clock) for _ in range(threads))
            bare = min(bare_python(steps) for _ in range(threads))
            share = whole - alone
            print(
                f"runtime {whole * 1e6:.2f}  reducer alone {alone * 1e6:.2f}  runtime's own"
                f" share {share * 1e6:.2f} ({share / whole:.0%})  bare {bare * 1e6:.2f} µs/step"
            )


if __name__ == "__main__":
    main()
