"""slow.agent's tools: each call notes that it entered (`entered.log` in SLOW_DIR), waits
until the test creates the barrier file `release` (or `release-<pid>` for this process
only), then notes that it ran (`ran.log`). A test sees where a process is without timing
anything."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

GIVE_UP_SECONDS = 120.0
"""A test that never opens the barrier fails here rather than hang the suite."""


def _note(file: str, line: str) -> None:
    with (Path(os.environ["SLOW_DIR"]) / file).open("a") as out:
        out.write(line + "\n")


def _pass_the_barrier(name: str, key: str) -> None:
    folder = Path(os.environ["SLOW_DIR"])
    me = f"{os.getpid()} {name} {key}"
    _note("entered.log", me)
    gates = (folder / "release", folder / f"release-{os.getpid()}")
    deadline = time.monotonic() + GIVE_UP_SECONDS
    while not any(gate.exists() for gate in gates):
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released the barrier")
        time.sleep(0.01)
    _note("ran.log", me)


def keyless(value: Any) -> dict[str, int]:
    _pass_the_barrier("keyless", "-")
    return {"n": value.n + 1}


def keyed(value: Any, idempotency_key: str) -> dict[str, int]:
    _pass_the_barrier("keyed", idempotency_key)
    return {"n": value.n + 1}
