"""`make demo` keeps working: the thread pauses for approval before `deploy`, then finishes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_offline_and_the_approval_comes_before_the_deploy() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    result = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "waits at `approve_deploy` for approval" in result.stdout
    assert "finished" in result.stdout
    database = ROOT / "build" / "demo" / "threads.db"
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master")}
        assert tables  # the thread really is in SQLite
    log = result.stdout.split("The thread's event log", 1)[1]
    kinds = [line.split()[2] for line in log.splitlines() if line.strip()[:1].isdigit()]
    steps = [line.split()[1] for line in log.splitlines() if line.strip()[:1].isdigit()]
    approved = kinds.index("approved")
    deploy_started = next(i for i, s in enumerate(steps) if s == "deploy")
    assert approved < deploy_started
    numbered = [line for line in log.splitlines() if line.strip()[:1].isdigit()]
    assert kinds[-1] == "model_output" and "DoneForNow" in numbered[-1]
