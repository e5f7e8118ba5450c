"""The PostgreSQL store's durable step, beside SQLite's (benchmarks/runtime.py).

The same counter thread as benchmarks/runtime.py, run to the end on a `PostgresStore` in a
throwaway cluster on loopback (tests/support/postgres.py, with `fsync=on` and
`synchronous_commit=on`: every commit reaches the disk, as SQLite's `synchronous=FULL`),
against the physical limit measured in the same run: a bare insert-and-commit of the same
event JSON over one psycopg connection. A PostgreSQL append is more round trips than one
insert (lock the thread's row, insert, update the row, commit), which is the ratio's cost.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchmarks.runtime import COUNTER, a_log, run_thread
from twelvefold.runtime.api import Runtime


def bare_postgres(url: str, bodies: list[str]) -> float:
    """Seconds per insert-and-commit of one event over one connection."""
    import psycopg

    with psycopg.connect(url) as db:
        db.execute("CREATE TABLE e (t bigint, s integer, body text, PRIMARY KEY (t, s))")
        db.commit()
        began = time.perf_counter()
        for seq, body in enumerate(bodies, start=1):
            db.execute("INSERT INTO e VALUES (1, %s, %s)", (seq, body))
            db.commit()
        elapsed = time.perf_counter() - began
    return elapsed / len(bodies)


def main() -> None:
    from tests.support.postgres import start_cluster, stop_cluster
    from twelvefold.runtime.pgstore import PostgresStore

    os.environ.pop("COUNTER_LOG", None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        agent = Runtime(cache_dir=folder / "cache").agent(COUNTER)
        # Its own folder: the cluster's user must reach it (mkdtemp's are 0700 each).
        cluster = start_cluster(Path(tempfile.mkdtemp(prefix="twelvefold-pg-")), fsync=True)
        try:
            print("## PostgreSQL store\n")
            print("Durable (PostgreSQL on loopback, fsync on), per appended event:\n")
            print("| thread | runtime (µs/event) | bare insert+commit (µs/event) | ratio |")
            print("|---:|---:|---:|---:|")
            for steps in (100, 1_000):
                url = cluster.create_database()
                store = PostgresStore(url)
                per_step = run_thread(store, agent, steps)
                store.close()
                events = a_log(agent, steps)
                per_event = per_step * (steps + 1) / len(events)
                bodies = [agent.codec.dumps_event(e) for e in events]
                bare = bare_postgres(cluster.create_database(), bodies)
                thread = f"{steps:,} steps ({len(events):,} events)"
                ratio = per_event / bare
                print(f"| {thread} | {per_event * 1e6:.0f} | {bare * 1e6:.0f} | {ratio:.2f}× |")
            print()
        finally:
            stop_cluster(cluster)


if __name__ == "__main__":
    main()
