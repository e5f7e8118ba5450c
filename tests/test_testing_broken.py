"""Each deliberately broken reducer is caught by the property meant to catch it, with a
minimal failing log; the correct module passes that property with the same settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.broken_reducers import BUGS, EXAMPLES, PROMPTS, StalePatch, broken_module, broken_source
from tests.support.generated import import_generated
from twelvefold.runtime.types import (
    Approved,
    Event,
    ModelOutput,
    Notified,
    Signalled,
    StepFailed,
    TimerFired,
    ToolResult,
)
from twelvefold.testing.coverage import ACTION_EVENTS, budget_paths, explore
from twelvefold.testing.oracle import source_paths
from twelvefold.testing.properties import PROPERTIES, Property, PropertyFailed
from twelvefold.testing.runner import aimed_cases, check_case, run_property
from twelvefold.testing.subject import Subject, checked_program

BY_NAME = {p.name: p for p in PROPERTIES}
EXAMPLES_PER_RUN = 60


def _subject(module: object, agent: str, reference: object = None) -> Subject:
    source = EXAMPLES / f"{agent}.agent"
    program = checked_program(source, PROMPTS)
    return Subject(
        module,  # type: ignore[arg-type]
        agent,
        program=program,
        reference=reference,  # type: ignore[arg-type]
        source=source,
    )


def _broken(name: str, tmp_path: Path) -> tuple[Subject, list[tuple[Event, ...]], Property]:
    """The broken module, the paths aimed along, and the property meant to catch it."""
    bug = BUGS[name]
    reference = import_generated(EXAMPLES / f"{bug.agent}.agent", tmp_path / "source")
    subject = _subject(broken_module(name, tmp_path), bug.agent, reference)
    paths = [*explore(subject).paths.values(), *source_paths(subject)]
    return subject, paths, BY_NAME[bug.caught_by]


def _caught(name: str, tmp_path: Path) -> PropertyFailed:
    subject, paths, prop = _broken(name, tmp_path)
    bug = BUGS[name]
    outcome = run_property(  # as `twelvefold test` runs it: the budget paths too
        subject,
        prop,
        examples=EXAMPLES_PER_RUN,
        seed=0,
        paths=paths,
        long_paths=budget_paths(subject),
    )
    assert outcome.failure is not None, f"{name} was not caught by {bug.caught_by}"
    return outcome.failure


@pytest.mark.parametrize("agent", ["deploybot", "calculator", "payment"])
def test_the_correct_modules_pass_every_property_the_bugs_are_caught_by(
    agent: str, tmp_path: Path
) -> None:
    module = import_generated(EXAMPLES / f"{agent}.agent", tmp_path)
    reference = import_generated(EXAMPLES / f"{agent}.agent", tmp_path / "source")
    subject = _subject(module, agent, reference)
    paths = list(explore(subject).paths.values())  # the illegal events aimed along them too
    for name in sorted({b.caught_by for b in BUGS.values()}):
        outcome = run_property(
            subject, BY_NAME[name], examples=EXAMPLES_PER_RUN, seed=0, paths=paths
        )
        assert outcome.ok, outcome.failure


def test_skipping_an_approval_is_caught_at_the_model_output(tmp_path: Path) -> None:
    failure = _caught("skip_approval", tmp_path)
    assert len(failure.events) == 2 and failure.at == 1
    (output,) = [e for e in failure.events if isinstance(e, ModelOutput)]
    assert type(output.output).__name__ == "DeployBackend"
    assert output.output.env == "production"  # type: ignore[attr-defined]
    assert "requires approval" in str(failure)


def test_skipping_the_division_approval_is_caught(tmp_path: Path) -> None:
    failure = _caught("skip_division_approval", tmp_path)
    assert len(failure.events) == 2
    assert type(failure.events[1].output).__name__ == "Divide"  # type: ignore[attr-defined]


def test_double_counted_errors_are_caught_at_the_first_failure(tmp_path: Path) -> None:
    failure = _caught("double_count_errors", tmp_path)
    assert len(failure.events) <= 3
    assert isinstance(failure.events[-1], StepFailed) and failure.at == len(failure.events) - 1
    assert "state.errors is 2, but the thread has failed 1 time(s) in a row" in str(failure)


def test_mutating_the_given_state_is_caught_at_the_first_failure(tmp_path: Path) -> None:
    failure = _caught("mutate_state", tmp_path)
    assert len(failure.events) <= 3 and isinstance(failure.events[-1], StepFailed)
    assert "reduce changed the state it was given" in str(failure)


def test_editing_the_given_event_is_caught(tmp_path: Path) -> None:
    failure = _caught("mutate_event", tmp_path)
    assert "reduce changed the event it was given" in failure.message
    assert isinstance(failure.events[failure.at or 0], ModelOutput)


def test_ignoring_max_steps_is_caught_at_the_sixteenth_action(tmp_path: Path) -> None:
    failure = _caught("ignore_max_steps", tmp_path)
    actions = [e for e in failure.events if isinstance(e, ACTION_EVENTS)]
    assert len(actions) == 16  # calculator's max_steps: no shorter log can show it
    assert failure.at == len(failure.events) - 1
    assert "max_steps 16, no target" in str(failure)


def test_a_reducer_without_its_step_check_takes_illegal_events(tmp_path: Path) -> None:
    failure = _caught("skip_step_check", tmp_path)
    assert failure.extra is not None and len(failure.events) <= 2
    assert "then after event" in str(failure)


def test_a_replay_that_drops_events_differs_from_the_fold(tmp_path: Path) -> None:
    failure = _caught("replay_skips_notifications", tmp_path)
    assert any(isinstance(e, Notified) for e in failure.events)
    assert len(failure.events) <= 4
    assert "replay differs" in str(failure)


def test_the_failure_shows_the_event_log_readably(tmp_path: Path) -> None:
    text = str(_caught("skip_approval", tmp_path))
    assert "events:" in text
    assert "model_output  @decide DeployBackend(tag='', env='production')  <-- here" in text


def test_a_patch_that_no_longer_applies_fails_loudly() -> None:
    bug = BUGS["skip_approval"]
    stale = type(bug)(bug.name, bug.agent, (("no such text", "x"),), bug.caught_by, bug.why)
    with pytest.raises(StalePatch):
        broken_source(stale)


def test_every_patch_changes_the_generated_module() -> None:
    from twelvefold.compiler import compile_file

    for bug in BUGS.values():
        (original,) = compile_file(
            EXAMPLES / f"{bug.agent}.agent", prompts_dir=PROMPTS
        ).files.values()
        assert broken_source(bug) != original


def test_approvals_in_the_broken_example_logs_are_real_events() -> None:
    # The minimal example types are the runtime's own: nothing is a stand-in.
    assert {Approved, ToolResult} <= set(ACTION_EVENTS)


DISAGREEING = sorted(n for n, bug in BUGS.items() if bug.caught_by == "agrees_with_source")


@pytest.mark.parametrize("name", DISAGREEING)
def test_a_module_that_disagrees_with_its_source_is_caught(name: str, tmp_path: Path) -> None:
    failure = _caught(name, tmp_path)
    assert "source" in failure.message


def test_an_edited_agent_is_reported_field_by_field(tmp_path: Path) -> None:
    message = _caught("agent_drops_requires_approval", tmp_path).message
    assert "AGENT disagrees with its source" in message
    assert "state deploy: the source requires approval" in message
    message = _caught("agent_raises_max_steps", tmp_path).message
    assert "max_steps is 25, the source says 24" in message


def test_an_action_that_calls_another_function_is_caught_where_it_is_asked_for(
    tmp_path: Path,
) -> None:
    failure = _caught("list_tags_calls_deploy", tmp_path)
    assert "next action differs" in failure.message
    assert "deploybot.tools:deploy_backend" in failure.message
    assert isinstance(failure.events[-1], ModelOutput)


@pytest.mark.parametrize(
    "name",
    ["answer_taken_as_approval", "deploy_takes_any_result", "undeclared_output_taken_as_done"],
)
def test_illegal_events_aimed_along_the_shortest_paths_are_refused(
    name: str, tmp_path: Path
) -> None:
    failure = _caught(name, tmp_path)
    assert failure.extra is not None
    assert "an illegal event was accepted" in failure.message


def test_an_action_that_forgets_what_the_state_holds_is_caught(tmp_path: Path) -> None:
    failure = _caught("approval_forgets_it_told_people", tmp_path)
    assert "does not say whether people were told" in failure.message
    assert isinstance(failure.events[-1], Notified)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("replay_takes_a_headless_log", "replay took a log without its started event"),
        ("forgets_the_input", "the thread was started with"),
        ("request_named_off_by_one", "the log opened"),
        ("retry_keeps_the_error", "but still holds the error"),
        ("failure_records_another_error", "but holds the error Error"),
    ],
)
def test_what_the_state_holds_is_checked_against_the_log(
    name: str, says: str, tmp_path: Path
) -> None:
    assert says in _caught(name, tmp_path).message


@pytest.mark.parametrize(
    "name", ["decision_request_ignored", "second_notice_taken", "result_without_a_start"]
)
def test_the_aimed_events_reach_stale_requests_told_waits_and_unstarted_calls(
    name: str, tmp_path: Path
) -> None:
    failure = _caught(name, tmp_path)
    assert failure.extra is not None
    assert "an illegal event was accepted" in failure.message


def test_an_event_of_the_wrong_type_moving_a_wait_is_caught(tmp_path: Path) -> None:
    failure = _caught("any_event_pays", tmp_path)
    assert isinstance(failure.extra, Signalled)
    assert type(failure.extra.value).__name__ != "PaymentReceived"


def test_a_timeout_taken_as_a_payment_is_caught(tmp_path: Path) -> None:
    failure = _caught("timeout_counts_as_paid", tmp_path)
    assert isinstance(failure.events[failure.at or 0], TimerFired)


def test_a_wait_that_names_no_request_is_caught(tmp_path: Path) -> None:
    failure = _caught("sleep_ignores_its_request", tmp_path)
    assert "names the request None" in str(failure)


AIMED_BUGS = sorted(n for n, bug in BUGS.items() if bug.caught_by == "illegal_events_raise")


@pytest.mark.parametrize("name", AIMED_BUGS)
def test_the_aimed_events_alone_catch_each_illegal_event_bug(name: str, tmp_path: Path) -> None:
    # Without Hypothesis: its draws under a fixed seed still change with the process (it
    # mixes in constants from every module imported so far), so a bug that only random
    # threads find is caught or missed depending on which tests ran first. The aimed
    # events must catch these whatever ran before.
    subject, paths, prop = _broken(name, tmp_path)
    caught = []
    for case in aimed_cases(subject, paths):
        try:
            check_case(subject, prop, case)
        except PropertyFailed as failed:
            caught.append(failed)
            break
    assert caught, f"{name}: no aimed event caught it"
