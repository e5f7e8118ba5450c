"""The thing under test: a generated reducer module, with what the properties need beside it.

Properties run the module's `reduce`, `replay`, `initial_state` and `next_action` and
compare what they do with what `AGENT` (the checked graph) and docs/language.md say must
happen. A module that describes itself wrongly (an `AGENT` edited together with the code)
would pass those checks, so when the `.agent` source is at hand the module is also
judged against it: `reference` is the module compiled afresh from that source, and
`agrees_with_source` compares the two, graph and behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from twelvefold.runtime.codec import Codec
from twelvefold.runtime.spec import AgentSpec, EdgeSpec
from twelvefold.runtime.types import Action, Event, State

if TYPE_CHECKING:
    from twelvefold.compiler.program import Program


@dataclass(frozen=True, eq=False)
class Subject:
    """A generated module under test. Hashed by identity: strategies are cached per subject."""

    module: ModuleType
    origin: str
    """Where it came from, for messages: the `.agent` path or the module's name."""
    directory: Path | None = None
    """The agent's folder, where user invariants are looked for."""
    program: Program | None = None
    """The checked program, when the `.agent` source is at hand: its edges carry the
    guards as syntax trees, so that routing can be checked rule by rule."""
    reference: ModuleType | None = None
    """The module compiled afresh from the `.agent` source, when the module under test is
    a `.py` file whose source was found: the oracle it must agree with."""
    source: Path | None = None
    """The `.agent` file the module was (or should have been) generated from."""
    codec: Codec = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codec", Codec(self.spec))

    def __repr__(self) -> str:  # Hypothesis prints the strategy's arguments
        return f"Subject({self.origin!r})"

    @property
    def spec(self) -> AgentSpec:
        spec: AgentSpec = self.module.AGENT
        return spec

    @property
    def name(self) -> str:
        return self.spec.name

    def initial_state(self, value: Any) -> State:
        state: State = self.module.initial_state(value)
        return state

    def reduce(self, state: State, event: Event) -> State:
        new: State = self.module.reduce(state, event)
        return new

    def replay(self, events: Sequence[Event]) -> State:
        state: State = self.module.replay(events)
        return state

    def next_action(self, state: State) -> Action:
        action: Action = self.module.next_action(state)
        return action

    # ---- the graph, as AGENT declares it --------------------------------------------

    def edges_from(self, step: str) -> list[tuple[int, EdgeSpec]]:
        return [(i, e) for i, e in enumerate(self.spec.edges) if e.source == step]

    def kind_of(self, step: str) -> str | None:
        state = self.spec.states.get(step)
        return state.kind if state is not None else None

    def is_final(self, step: str) -> bool:
        return self.kind_of(step) == "final"

    def can_fail(self, state: State) -> bool:
        """Whether a `StepFailed` is something this step can produce (see compiler/graph.py's
        `can_fail`: model calls and tools, and a wait with a timeout: a person who does not
        answer in time, a request no notice reached)."""
        kind = self.kind_of(state.step)
        if kind in ("llm", "tool"):
            return True
        if kind not in ("human", "approval"):
            return False
        if any(e.kind in ("error", "max_errors") for _, e in self.edges_from(state.step)):
            return True
        try:
            action = self.next_action(state)
        except Exception:
            return False
        return getattr(action, "timeout_seconds", None) is not None


def load_subject(
    path: Path,
    *,
    prompts_dir: Path | None = None,
    cache_dir: Path | None = None,
    source: Path | None = None,
) -> Subject:
    """Compile (through the runtime's cache) and import an `.agent` file, or import a
    generated module's `.py` file. A `.py` file is judged against its `.agent` source too:
    `source`, or the file its header names (`AGENT.source`) beside it. Raises
    `AgentLoadError` with the compiler's report."""
    from twelvefold.runtime.loading import load_agent

    loaded = load_agent(path, cache_dir=cache_dir, prompts_dir=prompts_dir)
    module = loaded.module
    assert isinstance(module, ModuleType)
    if path.suffix == ".agent":
        program = checked_program(path, prompts_dir)
        return Subject(
            module, str(path), path.resolve().parent, program=program, source=path.resolve()
        )
    found = source or _source_beside(path, module)
    if found is None:
        return Subject(module, str(path), path.resolve().parent)
    reference = load_agent(found, cache_dir=cache_dir, prompts_dir=prompts_dir).module
    assert isinstance(reference, ModuleType)
    program = checked_program(found, prompts_dir)
    return Subject(
        module,
        str(path),
        path.resolve().parent,
        program=program,
        reference=reference,
        source=found.resolve(),
    )


def _source_beside(path: Path, module: ModuleType) -> Path | None:
    named = getattr(getattr(module, "AGENT", None), "source", None)
    if not isinstance(named, str) or Path(named).name != named:
        return None
    candidate = path.resolve().parent / named
    return candidate if candidate.is_file() else None


def checked_program(path: Path, prompts_dir: Path | None = None) -> Program | None:
    from twelvefold.compiler import compile_file

    return compile_file(path, prompts_dir=prompts_dir, generate_code=False).program
