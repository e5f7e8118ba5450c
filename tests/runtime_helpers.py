"""Shared pieces of the runtime tests: a scripted model, a recording notifier, agents."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from twelvefold.runtime.model import ModelReply, ModelRequest
from twelvefold.runtime.types import Usage

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FIXTURES = Path(__file__).resolve().parent / "runtime_fixtures"

DEPLOY_CASSETTE: list[dict[str, Any]] = [
    {"agent": "deploybot", "step": "decide", "seq": 1, "type": "ListGitTags", "output": {}},
    {
        "agent": "deploybot",
        "step": "decide",
        "seq": 4,
        "type": "DeployBackend",
        "output": {"tag": "v1.2.3", "env": "production"},
    },
    {
        "agent": "deploybot",
        "step": "decide",
        "seq": 9,
        "type": "DoneForNow",
        "output": {"message": "deployed v1.2.3"},
    },
]
"""deploybot's model outputs for "deploy v1.2.3 to production": list the tags, deploy (an
approval waits in between), done."""


def write_cassette(path: Path, entries: list[dict[str, Any]] = DEPLOY_CASSETTE) -> Path:
    path.write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    return path


class ScriptedModel:
    """Answers each call with the next output: a dict `{"type": Name, ...fields}`, a
    model instance, or a function of the request (which survives a process restart,
    unlike a position in a list)."""

    def __init__(self, outputs: Sequence[Any] | Callable[[ModelRequest], Any]) -> None:
        self.outputs = outputs if callable(outputs) else list(outputs)
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        if callable(self.outputs):
            output = self.outputs(request)
        else:
            if not self.outputs:
                raise AssertionError(f"the script has no output left for `{request.action.step}`")
            output = self.outputs.pop(0)
        return ModelReply(as_output(request, output), Usage(input_tokens=10, output_tokens=5))


def as_output(request: ModelRequest, output: Any) -> BaseModel:
    if isinstance(output, BaseModel):
        return output
    fields = dict(output)
    name = fields.pop("type")
    (cls,) = [t for t in request.action.outputs if t.__name__ == name]
    return cls.model_validate(fields)


class RecordingNotifier:
    def __init__(self) -> None:
        self.notices: list[Any] = []

    async def notify(self, notice: Any) -> list[str]:
        self.notices.append(notice)
        return ["test"]


def no_messages(*_: Any) -> list[dict[str, str]]:
    return []


def counter_model(target: int, *, poke_every: int = 2) -> Callable[[ModelRequest], Any]:
    """The counter agent's decisions as a function of the value at `decide`, so a model
    restarted in another process continues exactly where the log says."""

    def decide(request: ModelRequest) -> Any:
        value = request.action.value
        n = value.n if isinstance(value, BaseModel) else 0
        if n >= target:
            return {"type": "Done", "n": n}
        kind = "Poke" if poke_every and n % poke_every == poke_every - 1 else "Bump"
        return {"type": kind, "n": n}

    return decide


def counter_run_probe(cache: Path) -> str:
    """Python source that runs a 10-step counter thread in memory, for a test that then
    looks at what the fresh process imported (compiled into `cache`)."""
    return (
        "import sys; from pathlib import Path\n"
        "from benchmarks.runtime import COUNTER, run_thread\n"
        "from twelvefold.runtime.api import Runtime\n"
        "from twelvefold.runtime.store import MemoryStore\n"
        f"agent = Runtime(cache_dir=Path({str(cache)!r})).agent(COUNTER)\n"
        "run_thread(MemoryStore(), agent, 10)\n"
    )
