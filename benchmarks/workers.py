"""Many workers on one PostgreSQL (issue 11): steps/s and threads/s with 1, 2 and 4 worker
processes, and the same workload on the SQLite server; then the crash bench.

The workload: THREADS threads of tests/worker_fixtures/crashbot.agent (six model calls,
two keyed tool calls, one keyless, one approval each), launched and approved over HTTP by
one client as bob and ana. The model is the real openai client against the scripted
server (tests/support/openai_server.py), which answers every completion after 50 ms.

- PostgreSQL: a throwaway cluster with fsync on (tests/support/postgres.py),
  `twelvefold db upgrade`, one `twelvefold serve --store postgresql://…` (it records and
  enqueues) and W `twelvefold worker` processes (`--concurrency` CONCURRENCY each).
- SQLite: one `twelvefold serve --store sqlite:///…` that runs the threads itself
  (`--concurrency` CONCURRENCY × 4, so it may run as many at once as 4 workers).

A run ends when every thread is finished (bounded by TIMEOUT); threads/s is THREADS over
the time from the first launch to the last finish, steps/s the threads' steps (13 each:
decide ×6, bump ×3, poke, approve_ship, ship, done) over the same time.

The crash bench: tests/test_worker.py's crash test with CRASH_THREADS threads (200), 4
workers SIGKILLed at random moments and restarted, and the same checks.

Settings (environment): TWELVEFOLD_BENCH_THREADS (200), TWELVEFOLD_BENCH_CONCURRENCY (8),
TWELVEFOLD_BENCH_TIMEOUT (600), TWELVEFOLD_BENCH_CRASH_THREADS (200; 0 skips it).
Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.support.openai_server import ScriptedOpenAI
from tests.support.postgres import start_cluster, stop_cluster
from tests.support.serve_process import free_port
from tests.support.waiting import wait_for
from tests.test_worker import AGENT, FIXTURES, Driver, crash_and_check, crashbot, make_cluster

MODEL_LATENCY = 0.05
STEPS_PER_THREAD = 13
"""crashbot's path: decide ×6, bump ×3, poke, approve_ship, ship, done."""
THREADS = int(os.environ.get("TWELVEFOLD_BENCH_THREADS", "200"))
CONCURRENCY = int(os.environ.get("TWELVEFOLD_BENCH_CONCURRENCY", "8"))
TIMEOUT = float(os.environ.get("TWELVEFOLD_BENCH_TIMEOUT", "600"))
CRASH_THREADS = int(os.environ.get("TWELVEFOLD_BENCH_CRASH_THREADS", "200"))


def twelvefold(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "twelvefold", *args],
        capture_output=True, text=True, env={**os.environ, **env}, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"twelvefold {args[0]} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def spawn(args: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "twelvefold", *args],
            env={**os.environ, **env}, stdout=out, stderr=out,
        )  # fmt: skip


def measure(
    store: str, workers: int, env: dict[str, str], folder: Path
) -> tuple[float, float, float]:
    """(threads/s, steps/s, cores) of one run of the workload on `store` with `workers`
    workers (0: the SQLite server runs the threads itself); cores is the CPU time the
    server and the workers used over the run's wall time (PostgreSQL's is not counted)."""
    tokens = {
        p: twelvefold("token", "create", p, "--store", store, "--create", env=env)
        for p in ("bob", "ana")
    }
    headers = {p: {"Authorization": f"Bearer {t}"} for p, t in tokens.items()}
    port = free_port()
    concurrency = CONCURRENCY if workers else CONCURRENCY * 4
    serve = spawn(["serve", str(AGENT), "--store", store, "--port", str(port), "--path",
                   str(FIXTURES), "--model", "gpt-4o-mini", "--concurrency", str(concurrency)],
                  env, folder / "serve.log")  # fmt: skip
    processes = [serve]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url, serve), "the server to answer")
        for i in range(workers):
            processes.append(
                spawn(
                    [
                        "worker",
                        str(AGENT),
                        "--store",
                        store,
                        "--concurrency",
                        str(CONCURRENCY),
                        "--path",
                        str(FIXTURES),
                        "--model",
                        "gpt-4o-mini",
                    ],
                    env,
                    folder / f"worker-{i}.log",
                )
            )
        for i in range(workers):  # the clock starts once every worker takes jobs
            log = folder / f"worker-{i}.log"
            wait_for(lambda log=log: "worker: running" in log.read_text(), f"worker {i}")
        with httpx.Client(base_url=url, timeout=60) as client:
            began = time.monotonic()
            cpu_began = _cpu(processes)
            ids = [
                client.post("/v1/agents/crashbot/threads", json={"input": f"t{i}"},
                            headers=headers["bob"]).json()["thread_id"]
                for i in range(THREADS)
            ]  # fmt: skip
            finished = 0
            while finished < THREADS:
                gone = [i for i, p in enumerate(processes) if p.poll() is not None]
                if gone or time.monotonic() - began > TIMEOUT:
                    # A bounded wait that says what is stuck (a process gone is not
                    # restarted: its threads would wait forever).
                    raise SystemExit(
                        f"only {finished} of {THREADS} threads finished after "
                        f"{time.monotonic() - began:.0f} s; "
                        + _standing(client, headers["bob"], processes, folder)
                    )
                waiting = client.get("/v1/threads", params={"status": "waiting"},
                                     headers=headers["ana"]).json()  # fmt: skip
                for thread in waiting:
                    view = client.get(f"/v1/threads/{thread['thread_id']}",
                                      headers=headers["ana"]).json()  # fmt: skip
                    if view.get("request"):
                        client.post(f"/v1/threads/{view['thread_id']}/decisions",
                                    json={"request": view["request"], "decision": "approve"},
                                    headers=headers["ana"])  # fmt: skip
                done = client.get("/v1/threads", params={"status": "finished"},
                                  headers=headers["bob"]).json()  # fmt: skip
                finished = len(done)
                time.sleep(0.1)
            elapsed = time.monotonic() - began
            cores = (_cpu(processes) - cpu_began) / elapsed
            events = sum(
                client.get(f"/v1/threads/{i}", headers=headers["bob"]).json()["events"] for i in ids
            )
        print(f"  ({events / THREADS:.0f} events per thread)", file=sys.stderr)
        rate = THREADS / elapsed
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return rate, rate * STEPS_PER_THREAD, cores


def _standing(
    client: httpx.Client,
    headers: dict[str, str],
    processes: Sequence[subprocess.Popen[bytes]],
    folder: Path,
) -> str:
    """Threads by status, and each process's state with the end of its log."""
    counts: dict[str, int] = {}
    for thread in client.get("/v1/threads", headers=headers).json():
        counts[thread["status"]] = counts.get(thread["status"], 0) + 1
    names = ["serve", *(f"worker-{i}" for i in range(len(processes) - 1))]
    said = [f"threads by status: {counts}"]
    for name, process in zip(names, processes, strict=True):
        state = "running" if process.poll() is None else f"exited {process.returncode}"
        log = folder / f"{name}.log"
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        said.append(f"--- {name}: {state}\n{tail}")
    return "\n".join(said)


def _cpu(processes: Sequence[subprocess.Popen[bytes]]) -> float:
    """The CPU seconds (user + system) the processes used so far (/proc, Linux)."""
    total = 0
    for process in processes:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def _up(url: str, serve: subprocess.Popen[bytes]) -> bool:
    if serve.poll() is not None:
        raise SystemExit("the server exited")
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    print(f"\n## Workers on PostgreSQL ({THREADS} threads, model answers after 50 ms)\n")
    print("| setup | threads/s | steps/s | CPU of serve + workers (cores) |")
    print("|---|---:|---:|---:|")
    with ScriptedOpenAI(latency=MODEL_LATENCY) as model, tempfile.TemporaryDirectory() as tmp:
        model.responder = crashbot
        env: dict[str, str] = {
            "OPENAI_BASE_URL": model.base_url,
            "OPENAI_API_KEY": "bench",
            "TWELVEFOLD_DB": "",
            "CRASHBOT_SLEEP": "0",
        }
        folder = Path(tmp)
        folder.chmod(0o755)  # the cluster may run as another user (tests/support/postgres.py)
        cluster = start_cluster(folder / "pg", fsync=True)
        try:
            for workers in (1, 2, 4):
                url = cluster.create_database()
                twelvefold("db", "upgrade", "--store", url, env=env)
                run = folder / f"w{workers}"
                run.mkdir()
                rate, steps, cores = measure(url, workers, env, run)
                print(f"| PostgreSQL, serve + {workers} worker(s) | {rate:.1f} | {steps:.0f} "
                      f"| {cores:.2f} |",
                      flush=True)  # fmt: skip
            run = folder / "sqlite"
            run.mkdir()
            rate, steps, cores = measure(f"sqlite:///{run / 'threads.db'}", 0, env, run)
            print(f"| SQLite, serve alone | {rate:.1f} | {steps:.0f} | {cores:.2f} |", flush=True)
            if CRASH_THREADS:
                crash = folder / "crash"
                crash.mkdir()
                began = time.monotonic()
                crashed = make_cluster(crash, cluster.create_database(), model)
                driver = Driver(crashed, model)
                try:
                    crash_and_check(crashed, driver, threads=CRASH_THREADS, kills=20, limit=TIMEOUT)
                except AssertionError:
                    for log in sorted(crash.glob("worker-*.log")):  # why, before they go
                        print(f"--- {log.name}:\n{log.read_text()[-3000:]}", file=sys.stderr)
                    raise
                finally:
                    crashed.stop()
                print(f"\ncrash bench: {CRASH_THREADS} threads, 4 workers, 20 SIGKILLs: every "
                      f"check passed in {time.monotonic() - began:.0f} s")  # fmt: skip
        finally:
            stop_cluster(cluster)


if __name__ == "__main__":
    main()
