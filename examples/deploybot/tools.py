"""deploybot's tools.

They stand in for a real release system: the tags come from DEPLOYBOT_TAGS (or a fixed
list), and a deploy records itself in DEPLOYBOT_LEDGER when that is set, keyed by the
idempotency key the runtime passes, so running the same deploy twice is visible.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Protocol

DEFAULT_TAGS = ("v1.2.3", "v1.2.2", "v1.2.1")


class DeployRequest(Protocol):
    tag: str
    env: str


def list_git_tags() -> dict[str, list[str]]:
    """The tags that can be deployed, newest first."""
    configured = os.environ.get("DEPLOYBOT_TAGS")
    tags = configured.split(",") if configured else list(DEFAULT_TAGS)
    return {"tags": [t.strip() for t in tags if t.strip()]}


def deploy_backend(request: DeployRequest, idempotency_key: str) -> dict[str, object]:
    """Deploy one tag to one environment; a tag that does not exist fails."""
    started = time.perf_counter()
    if request.tag not in list_git_tags()["tags"]:
        raise LookupError(f"no tag {request.tag!r}; run list_tags to see the tags")
    ledger = os.environ.get("DEPLOYBOT_LEDGER")
    if ledger:
        path = Path(ledger)
        done = {}
        if path.exists():
            done = {json.loads(line)["key"]: line for line in path.read_text().splitlines()}
        if idempotency_key not in done:  # the same key twice is the same deploy
            with path.open("a") as file:
                entry = {"key": idempotency_key, "tag": request.tag, "env": request.env}
                file.write(json.dumps(entry) + "\n")
    return {
        "url": f"https://{request.env}.deploybot.example/releases/{request.tag}",
        "took_seconds": round(time.perf_counter() - started, 3),
    }
