"""flaky.agent's tool. Each attempt appends `attempt <unix time>` to FLAKY_DIR/attempts.log;
the first attempt raises, the later ones return (a keyless tool: no idempotency key)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def bump(value: Any) -> dict[str, int]:
    log = Path(os.environ["FLAKY_DIR"]) / "attempts.log"
    before = log.read_text().count("\n") if log.exists() else 0
    with log.open("a") as out:
        out.write(f"attempt {time.time()}\n")
    if before == 0:
        raise ConnectionError("the service is down")
    return {"n": value.n + 1}
