"""counter.agent's tools. With COUNTER_LOG set, each call appends a line to a file there
(the side effect the crash tests count); COUNTER_SLEEP slows each call down."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def _side_effect(file: str, line: str) -> None:
    folder = os.environ.get("COUNTER_LOG")
    if not folder:
        return  # instant: the benchmarks measure the runtime, not the tool
    pause = float(os.environ.get("COUNTER_SLEEP", "0"))
    time.sleep(pause)
    with (Path(folder) / file).open("a") as out:
        out.write(line + "\n")
    time.sleep(pause)


def bump(value: Any, idempotency_key: str) -> dict[str, int]:
    _side_effect("bump.log", idempotency_key)
    return {"n": value.n + 1}


def poke(value: Any) -> dict[str, int]:
    _side_effect("poke.log", str(value.n))
    return {"n": value.n + 1}
