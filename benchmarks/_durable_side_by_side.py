"""Wall time per durable event against a bare commit measured beside it, for comparing
two copies of the code on a disk whose speed drifts from minute to minute.

Run it by path, so that `PYTHONPATH` decides which `twelvefold` is imported (with
`python -m` the current folder would come first):

    git archive main | tar -x -C /tmp/before
    for i in 1 2; do
        PYTHONPATH=/tmp/before .venv/bin/python benchmarks/_durable_side_by_side.py
        .venv/bin/python benchmarks/_durable_side_by_side.py
    done

Each round times `bare_sqlite` (benchmarks/runtime.py: an insert and a commit per event
of the same log, WAL, synchronous=FULL), then a counter thread of `STEPS` actions in a
`SqliteStore` (`run_thread`), then `bare_sqlite` again, in files of one temporary folder
(`DIR`, /var/tmp by default: on the disk, not tmpfs), and takes the runtime's time per
event over the mean of the two bare ones. It prints the best of each and the median of
the `ROUNDS` rounds' ratios, which the disk's drift disturbs least. Not part of
`make bench` (its name starts with `_`).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

import twelvefold


def main() -> None:
    root = Path(twelvefold.__file__).resolve().parents[1]
    sys.path.insert(0, str(root))  # that copy's benchmarks/runtime.py and fixtures
    from benchmarks.runtime import COUNTER, a_log, bare_sqlite, run_thread
    from twelvefold.runtime.api import Runtime
    from twelvefold.runtime.store import SqliteStore

    os.environ.pop("COUNTER_LOG", None)  # the counter's tools are instant without it
    steps = int(os.environ.get("STEPS", "2000"))
    rounds = int(os.environ.get("ROUNDS", "8"))
    with tempfile.TemporaryDirectory(dir=os.environ.get("DIR", "/var/tmp")) as tmp:
        folder = Path(tmp)
        agent = Runtime(cache_dir=folder / "cache").agent(COUNTER)
        events = a_log(agent, steps)
        bodies = [agent.codec.dumps_event(e) for e in events]
        ratios, runtimes, bares = [], [], []
        for round_ in range(rounds):
            before = bare_sqlite(folder / f"bare-{round_}-a.db", bodies)
            per_step = run_thread(SqliteStore(folder / f"run-{round_}.db"), agent, steps)
            after = bare_sqlite(folder / f"bare-{round_}-b.db", bodies)
            runtime, bare = per_step * (steps + 1) / len(events), (before + after) / 2
            ratios.append(runtime / bare)
            runtimes.append(runtime)
            bares.append(bare)
    print(
        f"{root}: runtime {min(runtimes) * 1e6:.0f} µs/event, bare {min(bares) * 1e6:.0f}"
        f" (best of {rounds}); ratio per round: median {statistics.median(ratios):.2f}×"
        f" ({min(ratios):.2f}–{max(ratios):.2f}×)"
    )


if __name__ == "__main__":
    main()
