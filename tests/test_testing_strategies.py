"""Generated threads are legal and accepted; generated illegal events are refused; values
of every field type validate and survive JSON."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, create_model

from tests.support.generated import EXAMPLES, PROMPTS, import_generated
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.spec import BUDGET_EXHAUSTED
from twelvefold.runtime.types import (
    Cancelled,
    Event,
    Forked,
    IllegalEvent,
    Retried,
    Started,
    ToolStarted,
)
from twelvefold.testing.coverage import Constants, budget_paths, explore
from twelvefold.testing.properties import is_action
from twelvefold.testing.runner import path_cases
from twelvefold.testing.strategies import (
    cases,
    is_ask_not_shown,
    is_legal,
    legal_moves,
    models,
    threads,
)
from twelvefold.testing.subject import Subject

GOLDEN = Path(__file__).parent / "golden"
AGENTS = {
    "deploybot": (EXAMPLES / "deploybot.agent", PROMPTS),
    "calculator": (EXAMPLES / "calculator.agent", PROMPTS),
    "tricky": (GOLDEN / "tricky_names" / "input.agent", GOLDEN / "tricky_names" / "prompts"),
    "guards": (GOLDEN / "guards" / "input.agent", GOLDEN / "guards" / "prompts"),
    "supportbot": (EXAMPLES / "supportbot.agent", PROMPTS),
    "tool_routing": (GOLDEN / "tool_routing" / "input.agent", GOLDEN / "tool_routing" / "prompts"),
}
FAST = settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(scope="module", params=sorted(AGENTS))
def subject(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Subject:
    agent, prompts = AGENTS[request.param]
    module = import_generated(agent, tmp_path_factory.mktemp(request.param), prompts)
    return Subject(module, request.param)


def test_generated_threads_are_legal_and_accepted(subject: Subject) -> None:
    @FAST
    @given(threads(subject))
    def check(events: tuple[object, ...]) -> None:
        first = events[0]
        assert isinstance(first, Started) and first.step == subject.spec.start
        state = subject.initial_state(first.input)
        for event in events[1:]:
            assert is_legal(subject, state, event), event  # type: ignore[arg-type]
            state = subject.reduce(state, event)  # type: ignore[arg-type]

    check()


def test_generated_illegal_events_are_refused_without_a_change(subject: Subject) -> None:
    @FAST
    @given(cases(subject))
    def check(case: object) -> None:
        illegal = case.illegal  # type: ignore[attr-defined]
        if illegal is None:
            return
        state = subject.replay(case.events[: case.illegal_at + 1])  # type: ignore[attr-defined]
        assert not is_legal(subject, state, illegal)
        with pytest.raises(IllegalEvent):
            subject.reduce(state, illegal)

    check()


def test_values_of_every_declared_type_validate_and_round_trip(subject: Subject) -> None:
    codec = Codec(subject.spec)

    @FAST
    @given(
        st.sampled_from(sorted(subject.spec.types)).flatmap(
            lambda name: models(subject.spec.types[name])
        )
    )
    def check(value: object) -> None:
        assert codec.decode_value(codec.encode_value(value)) == value

    check()


def test_threads_meet_forks_cancels_and_unshown_asks(subject: Subject) -> None:
    # What happens beside the graph is drawn too: a fork, a cancel (after which only
    # forks follow) and, at an untold wait, an ask that could not be shown.
    # An unshown ask is drawn at an untold wait about once in 36 steps there: with random
    # seeds 200 threads of calculator (one approval, reached by a division) sometimes meet
    # none, so the draws are fixed; the woven paths below meet it at every wait.
    seen: set[str] = set()

    @settings(FAST, max_examples=200, derandomize=True)
    @given(threads(subject))
    def collect(events: tuple[Event, ...]) -> None:
        for index, event in enumerate(events):
            if isinstance(event, Forked):
                seen.add("forked")
            elif isinstance(event, Cancelled):
                seen.add("cancelled")
                assert all(isinstance(e, Forked) for e in events[index + 1 :])
            elif is_ask_not_shown(event):
                seen.add("ask not shown")

    collect()
    assert {"forked", "cancelled"} <= seen
    if subject.name in ("deploybot", "calculator") and "ask not shown" not in seen:
        # Rare by design (see above), and Hypothesis's draws shift with what the process
        # imported, so look for one until found (`find` fails if none turns up).
        find(
            threads(subject),
            lambda events: any(is_ask_not_shown(e) for e in events),
            settings=settings(FAST, max_examples=3000, database=None),
        )


def test_woven_paths_fork_cancel_and_fail_to_ask_at_every_state(subject: Subject) -> None:
    paths = list(explore(subject).paths.values())
    cases = list(path_cases(subject, paths))
    woven = [c.events for c in cases[len(paths) :]]
    kinds = {type(e).__name__ for events in woven for e in events}
    assert {"Forked", "Cancelled"} <= kinds
    if any(s.kind in ("approval", "human") for s in subject.spec.states.values()):
        assert any(is_ask_not_shown(e) for events in woven for e in events)
    for events in woven:  # every woven log is legal, and the reducer takes all of it
        state = subject.initial_state(events[0].input)  # type: ignore[attr-defined]
        for event in events[1:]:
            assert is_legal(subject, state, event), event
            state = subject.reduce(state, event)


def test_budget_paths_end_with_the_action_that_reaches_max_steps(subject: Subject) -> None:
    budget = subject.spec.max_steps
    paths = budget_paths(subject)
    if budget is None:
        assert paths == []
        return
    assert paths
    finals = 0
    retried = 0
    for path in paths:
        if isinstance(path[-1], Retried):  # the budget failed the thread: a person goes on
            retried += 1
            path = path[:-1]
            assert subject.replay(path).error == BUDGET_EXHAUSTED
        before = subject.replay(path[:-1])
        after = subject.reduce(before, path[-1])
        assert before.steps == budget - 1 and is_action(path[-1])
        finals += after.status == "finished"
    assert finals, "some path reaches a final step with the budget's last action"
    assert retried or subject.spec.on_max_steps is not None


def test_a_spec_with_max_errors_but_no_target_is_refused(subject: Subject) -> None:
    # The grammar always names the max_errors target; a hand-written AGENT without one
    # would silently ignore the ceiling, so it does not load at all.
    from dataclasses import replace

    with pytest.raises(ValueError, match="max_errors needs a target"):
        replace(subject.spec, max_errors=2, on_max_errors=None)


def test_tool_results_of_every_member_with_the_guards_values(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # tests/golden/tool_routing: `find` returns Found | Missing and routes Found on
    # `region == "eu-west"` (a string: random text would all but never be "eu-west").
    agent, prompts = AGENTS["tool_routing"]
    subject = Subject(import_generated(agent, tmp_path_factory.mktemp("routing"), prompts), "r")
    state = subject.initial_state(subject.spec.types["Query"](id="q"))
    state = subject.reduce(state, ToolStarted(step="find", key="k"))
    moves = {move.label: move for move in legal_moves(subject, state)}
    assert {"tool result Found", "tool result Missing"} <= set(moves)
    assert (moves["tool result Found"].edge_kind, moves["tool result Found"].type_name) == (
        "output",
        "Found",
    )
    regions: list[str] = []

    # Derandomized: the same draws on every run (a seedless run missed "eu-west" once).
    @settings(max_examples=200, deadline=None, database=None, derandomize=True)
    @given(moves["tool result Found"].events)
    def draw(event: object) -> None:
        regions.append(event.result.region)  # type: ignore[attr-defined]

    draw()
    # A string field draws each of the 2 string constants ("eu-west", "paid") at least
    # 1 time in 8: far more than once in 200, not by luck.
    assert regions.count("eu-west") >= len(regions) // 16, regions.count("eu-west")


def test_every_field_of_a_wide_type_draws_the_guards_constants() -> None:
    # A guard may read any field: the 40th is as likely to be "eu-west" as the first.
    wide = create_model("Wide", **{f"f{i}": (str, ...) for i in range(40)})  # type: ignore[call-overload]
    near = Constants(strings=("eu-west",))
    last: list[str] = []

    @settings(max_examples=200, deadline=None, database=None, derandomize=True)
    @given(models(wide, near=near))
    def draw(value: BaseModel) -> None:
        last.append(value.f39)  # type: ignore[attr-defined]

    draw()
    assert last.count("eu-west") >= len(last) // 8, last.count("eu-west")
