"""User invariants: plain functions over a thread's state and event log, found beside the agent.

For `agents/deploybot.agent`, the functions named `invariant_*` in
`agents/deploybot_invariants.py` and in `agents/invariants.py` are run on every prefix of
every generated thread. One fails by raising `AssertionError` (a plain `assert`) or by
returning False:

    def invariant_production_needs_a_tag(state, events):
        assert not (state.step == "deploy" and state.value.env == "production"
                    and not state.value.tag)
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twelvefold.runtime.loading import AgentLoadError, import_file
from twelvefold.runtime.types import Event, State

InvariantFunction = Callable[[State, Sequence[Event]], Any]
PREFIX = "invariant_"


class InvariantLoadError(Exception):
    """An invariants file that does not import."""


@dataclass(frozen=True)
class Invariant:
    name: str
    """`file.py:function`, for messages."""
    function: InvariantFunction


def invariant_files(agent: Path) -> list[Path]:
    folder = agent.resolve().parent
    candidates = [folder / f"{agent.stem}_invariants.py", folder / "invariants.py"]
    return [path for path in candidates if path.is_file()]


def find_invariants(agent: Path) -> list[Invariant]:
    """The `invariant_*` functions defined in the agent's invariants files (by name)."""
    found: list[Invariant] = []
    for path in invariant_files(agent):
        module = _import(path)
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if name.startswith(PREFIX) and function.__module__ == module.__name__:
                found.append(Invariant(f"{path.name}:{name}", function))
    return found


def _import(path: Path) -> Any:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"_twelvefold_invariants_{path.stem}_{digest}"
    try:
        return import_file(path, name)
    except AgentLoadError as exc:
        raise InvariantLoadError(str(exc)) from exc
