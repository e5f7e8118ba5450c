"""crashbot.agent's tools. With CRASHBOT_DIR set, each call appends a line to a file there
(`effects.log`: the side effects the crash test counts); CRASHBOT_SLEEP (seconds) slows
each call down so a SIGKILL can land in the middle of one."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def _effect(line: str) -> None:
    folder = os.environ.get("CRASHBOT_DIR")
    pause = float(os.environ.get("CRASHBOT_SLEEP", "0"))
    time.sleep(pause)
    if folder:
        with (Path(folder) / "effects.log").open("a") as out:
            out.write(line + "\n")
    time.sleep(pause)


def bump(value: Any, idempotency_key: str) -> dict[str, int]:
    _effect(f"keyed {idempotency_key}")
    return {"n": value.n + 1}


def ship(value: Any, idempotency_key: str) -> dict[str, int]:
    _effect(f"keyed {idempotency_key}")
    return {"n": value.n + 1}


def poke(value: Any) -> dict[str, int]:
    _effect(f"keyless {os.getpid()}")
    return {"n": value.n + 1}
