"""CPU time per step of the in-memory runtime, for comparing two copies of the code.

Run it by path, so that `PYTHONPATH` decides which `twelvefold` is imported (with
`python -m` the current folder would come first):

    git archive main | tar -x -C /tmp/before
    for i in 1 2 3; do
        PYTHONPATH=/tmp/before .venv/bin/python benchmarks/_side_by_side.py
        .venv/bin/python benchmarks/_side_by_side.py
    done

It prints the copy it measured and the best of `THREADS` counter threads of `STEPS`
actions (benchmarks/runtime.py's `run_thread`: memory store, instant model and tool,
tracing off) in this process's CPU time, which a loaded machine disturbs far less than
the wall clock. Not part of `make bench` (its name starts with `_`).

With `SHARE=1` (a copy whose `reducer_alone` takes a clock), `ROUNDS` times over, it also
prints the reducer alone's CPU time, the runtime's own share (the difference) and the
bare Python loop (docs/benchmarks.md, "The runtime's own share of a step"):

    SHARE=1 ROUNDS=4 .venv/bin/python benchmarks/_side_by_side.py
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
    clock = time.process_time
    with tempfile.TemporaryDirectory() as tmp:
        agent = Runtime(cache_dir=Path(tmp) / "cache").agent(COUNTER)
        if not os.environ.get("SHARE"):
            best = min(run_thread(MemoryStore(), agent, steps, clock) for _ in range(threads))
            print(f"{root}: {best * 1e6:.2f} µs/step (CPU, best of {threads} × {steps} steps)")
            return
        for _ in range(int(os.environ.get("ROUNDS", "4"))):
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
