"""Running the properties: Hypothesis for random threads (shrunk to a minimal failing log),
then the shortest paths to every edge, which reach the ceilings deterministically."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import hypothesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis.errors import Flaky
from pydantic import BaseModel

from twelvefold.interrupts import go_on
from twelvefold.runtime.spec import ASK_NOT_SHOWN
from twelvefold.runtime.types import (
    Cancelled,
    ErrorInfo,
    Event,
    Forked,
    ModelOutput,
    Notified,
    Retried,
    Signalled,
    Started,
    State,
    StepFailed,
    ToolResult,
)

from . import DEFAULT_EXAMPLES
from .coverage import Constants, Coverage, model_representatives
from .properties import Property, PropertyFailed, probes
from .strategies import Case, aimed, cases, forks_here, is_legal, simpler_events
from .subject import Subject


@dataclass(frozen=True)
class Outcome:
    prop: Property
    failure: PropertyFailed | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def check_case(subject: Subject, prop: Property, case: Case) -> None:
    """Run one check; anything it raises becomes a `PropertyFailed` that shows the log.
    The check gets its own copy of the log: a reducer that edits the events it is given
    must not edit the drawn example (Hypothesis replays it to confirm a failure, and the
    screening run hands the same log to every property)."""
    try:
        prop.check(subject, copy.deepcopy(case))
    except PropertyFailed as failed:
        if failed.events:
            raise
        raise failed.located(case.events, case.illegal) from failed
    except Exception as crashed:
        raise PropertyFailed(
            f"{type(crashed).__name__}: {crashed}", case.events, None, case.illegal
        ) from crashed


def _settings(examples: int, seed: int | None) -> settings:
    # No Hypothesis shrinking: its shrinker works on the choices that made a log, and a
    # walk's later choices all depend on its earlier ones, so it is slow here and stops
    # early. `minimize` shrinks whole events and payloads instead.
    return settings(
        max_examples=examples,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        deadline=None,
        database=None,
        derandomize=seed is None,
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


def _run(test: Callable[[], None], seed: int | None) -> None:
    if seed is not None:
        test = hypothesis.seed(seed)(test)
    test()


def run_property(
    subject: Subject,
    prop: Property,
    *,
    examples: int = DEFAULT_EXAMPLES,
    seed: int | None = None,
    coverage: Coverage | None = None,
    paths: Sequence[Sequence[Event]] = (),
    max_events: int | None = None,
    long_paths: Sequence[Sequence[Event]] = (),
) -> Outcome:
    """Check `prop` on `examples` random threads (shrinking a failure to a minimal log),
    then on each of `paths` (and their variants, `path_cases`) and `long_paths`."""

    def body(case: Case) -> None:
        go_on()
        if coverage is not None:
            coverage.record(case.events)
        check_case(subject, prop, case)

    test = _settings(examples, seed)(given(cases(subject, max_events))(body))
    drawn: PropertyFailed | None = None
    try:
        _run(test, seed)
    except PropertyFailed as failed:
        drawn = minimize(subject, prop, failed)
    except Flaky as flaky:
        return Outcome(
            prop,
            PropertyFailed(
                "the same log passed once and failed once: the reducer is not deterministic "
                f"({type(flaky).__name__}: {flaky})"
            ),
        )
    # The paths are checked even after a random thread failed: `minimize` only cuts and
    # simplifies the log it is given, and a path may break the property in fewer events
    # than any log that random thread shrinks to. The shorter minimal example is shown.
    aimed = aimed_cases(subject, paths) if prop.judges_illegal_events else iter(())
    for case in itertools.chain(path_cases(subject, paths, long_paths), aimed):
        try:
            check_case(subject, prop, case)
        except PropertyFailed as failed:
            walked = minimize(subject, prop, failed)
            if drawn is None or len(walked.events) < len(drawn.events):
                return Outcome(prop, walked)
            break
    return Outcome(prop, drawn)


def path_cases(
    subject: Subject, paths: Sequence[Sequence[Event]], long_paths: Sequence[Sequence[Event]] = ()
) -> Iterator[Case]:
    """Each shortest path as it is, then with people told at every pause on it: the
    shortest paths take every edge but never record a notice, and what a pause looks like
    once someone was told (`notified`, its action) is as much the reducer's business.
    Then each with what happens beside the graph woven in (`beside_the_graph`), and each
    of `long_paths` (logs that reach the step budget) as it is."""
    for path in paths:
        yield Case(tuple(path))
    for path in paths:
        told = _told_at_every_pause(subject, path)
        if len(told) != len(path):
            yield Case(told)
    for path in paths:
        for weave in WEAVES:
            woven = _woven(subject, path, weave)
            if len(woven) != len(path):
                yield Case(woven)
    for path in paths:
        yield from _every_value_last(subject, path)
    for path in long_paths:
        yield Case(tuple(path))


def _every_value_last(subject: Subject, path: Sequence[Event]) -> Iterator[Case]:
    """`path` again once for each other representative of the value its last event
    carries (a model output, a tool result, an outside event). A shortest path takes its
    edge with the first value that does; what the reducer does with the others (the
    other side of a guard, a sensitive tool's input that needs an approval) is as much its
    business, and random threads meet a given one only by chance."""
    if not path:
        return
    last = path[-1]
    with_value: Callable[[BaseModel], Event]
    match last:
        case ModelOutput(output=value):
            with_value = lambda other: replace(last, output=other)  # noqa: E731
        case ToolResult(result=value):
            with_value = lambda other: replace(last, result=other)  # noqa: E731
        case Signalled(value=value):
            with_value = lambda other: replace(last, value=other)  # noqa: E731
        case _:
            return
    constants = Constants.of(subject.spec.edges)
    for other in model_representatives(type(value), constants)[:16]:
        if other != value:
            yield Case((*path[:-1], with_value(other)))


Weave = Callable[[Subject, State], list[Event]]


def _fork_everywhere(subject: Subject, state: State) -> list[Event]:
    if not forks_here(subject, state.step, state.status, state.tool_key):
        return []
    return [Forked(step=state.step, parent="parent", parent_seq=state.seq)]


def _fork_a_told_pause(subject: Subject, state: State) -> list[Event]:
    """At an untold pause: a notice that got nowhere, one that got through, then a fork
    (whose wait is its own: nobody told, nothing counted)."""
    if state.status != "waiting" or state.notified:
        return []
    return [
        Notified(step=state.step, channels=("log",), failed=("email: refused",)),
        Notified(step=state.step, channels=("email",)),
        Forked(step=state.step, parent="parent", parent_seq=state.seq + 2),
    ]


def _ask_not_shown(subject: Subject, state: State) -> list[Event]:
    """At an untold pause: its `ask` could not be shown, and a person retries it."""
    if state.status != "waiting" or state.notified:
        return []
    error = ErrorInfo(ASK_NOT_SHOWN, "the ask could not be rendered")
    return [StepFailed(step=state.step, error=error), Retried(step=state.step)]


WEAVES: tuple[Weave, ...] = (_fork_everywhere, _fork_a_told_pause, _ask_not_shown)
"""What happens beside the graph, woven into a path after each of its events: the
shortest paths never record a fork or an unshown `ask`, and random threads meet them at
a few states only. A cancel is put at the end of every path (`_woven`)."""


def _woven(subject: Subject, path: Sequence[Event], weave: Weave) -> tuple[Event, ...]:
    """`path` with `weave`'s events after each of its events, its decisions re-aimed at
    the request pending where they now stand (a fork opens a new one), then a cancel and
    a fork of the cancelled thread. A log the reducer breaks on ends with the event it
    broke on, for the properties to report."""
    first = path[0]
    assert isinstance(first, Started)
    events: list[Event] = [first]
    try:
        state = subject.initial_state(first.input)
    except Exception:
        return tuple(path)
    for event in [*path[1:], None]:
        if event is None:  # the end: cancel the thread, then fork the cancelled thread
            if state.status == "finished":
                break
            extras: list[Event] = [
                Cancelled(step=state.step, by="ana", reason="not needed"),
                Forked(step=state.step, parent="parent", parent_seq=state.seq + 1),
            ]
        else:
            extras = [aimed(event, state)]
        for extra in extras:
            events.append(extra)
            try:
                state = subject.reduce(state, copy.deepcopy(extra))
            except Exception:
                return tuple(events)
        if event is None:
            break
        for extra in weave(subject, state):
            events.append(extra)
            try:
                state = subject.reduce(state, copy.deepcopy(extra))
            except Exception:
                return tuple(events)
    return tuple(events)


def _told_at_every_pause(subject: Subject, path: Sequence[Event]) -> tuple[Event, ...]:
    events: list[Event] = []
    try:
        state = None
        for event in path:
            events.append(event)
            state = (
                subject.initial_state(event.input)
                if state is None and isinstance(event, Started)
                else subject.reduce(state, copy.deepcopy(event))  # type: ignore[arg-type]
            )
            if state.status == "waiting" and not state.notified:
                notice = Notified(step=state.step, channels=("log",))
                events.append(notice)
                state = subject.reduce(state, notice)
    except Exception:
        return tuple(path)  # the plain path's case reports what broke
    return tuple(events)


def aimed_cases(subject: Subject, paths: Sequence[Sequence[Event]]) -> Iterator[Case]:
    """Each shortest path with an illegal event of every kind aimed at the state after
    each of its prefixes (for that state's step and for another): random threads draw one
    illegal event each, and seldom on these paths, which take every edge of the graph."""
    for path in paths:
        for at in range(len(path)):
            try:
                state = subject.replay(copy.deepcopy(list(path[: at + 1])))
            except Exception:
                break  # the property run on the plain path reports it
            others = [s for s in subject.spec.states if s != state.step][:1]
            for step in [state.step, *others]:
                for probe in probes(subject, step, state.request):
                    if not is_legal(subject, state, probe):
                        yield Case(tuple(path), at, probe)
            if state.status == "waiting" and not state.notified:
                # The shortest paths tell nobody: aim at a wait whose people were told too.
                told = (*path[: at + 1], Notified(step=state.step, channels=("log",)))
                try:
                    told_state = subject.replay(copy.deepcopy(list(told)))
                except Exception:
                    continue  # the reducer refused a legal notice: the properties say so
                for probe in probes(subject, state.step, told_state.request):
                    if not is_legal(subject, told_state, probe):
                        yield Case(told, at + 1, probe)


def run_properties(
    subject: Subject,
    props: Sequence[Property],
    *,
    examples: int = DEFAULT_EXAMPLES,
    seed: int | None = None,
    coverage: Coverage | None = None,
    paths: Sequence[Sequence[Event]] = (),
    max_events: int | None = None,
    long_paths: Sequence[Sequence[Event]] = (),
) -> list[Outcome]:
    """All of `props` on the same threads: one screening run checks every property on
    each generated log (cheap when they all hold); each property that fails is then run
    on its own, so that Hypothesis shrinks the log for that property."""
    failing: dict[str, PropertyFailed] = {}

    def screen(case: Case) -> None:
        go_on()
        if coverage is not None:
            coverage.record(case.events)
        screen_with(case, props)

    def screen_with(case: Case, props: Sequence[Property]) -> None:
        for prop in props:
            if prop.name not in failing:
                try:
                    check_case(subject, prop, case)
                except PropertyFailed as failed:
                    failing[prop.name] = failed

    _run(_settings(examples, seed)(given(cases(subject, max_events))(screen)), seed)
    for case in path_cases(subject, paths, long_paths):
        screen(case)
    judges = [prop for prop in props if prop.judges_illegal_events]
    for case in aimed_cases(subject, paths):
        screen_with(case, judges)
    outcomes: list[Outcome] = []
    for prop in props:
        if prop.name not in failing:
            outcomes.append(Outcome(prop))
            continue
        targeted = run_property(
            subject,
            prop,
            examples=examples,
            seed=seed,
            paths=paths,
            max_events=max_events,
            long_paths=long_paths,
        )
        if targeted.ok:  # the targeted run drew other threads: keep what screening found
            targeted = Outcome(prop, minimize(subject, prop, failing[prop.name]))
        outcomes.append(targeted)
    return outcomes


# ---- a last shrink, on whole events ------------------------------------------------


def _case_for(prop: Property, events: Sequence[Event], failed: PropertyFailed) -> Case:
    if failed.extra is not None and prop.name == "illegal_events_raise":
        return Case(tuple(events), len(events) - 1, failed.extra)
    return Case(tuple(events))


def _is_legal_log(subject: Subject, events: Sequence[Event]) -> bool:
    first = events[0]
    if not isinstance(first, Started):
        return False
    try:
        state = subject.initial_state(first.input)
        for event in events[1:]:
            if not is_legal(subject, state, event):
                return False
            state = subject.reduce(state, event)
    except Exception:
        return True  # the reducer broke on a legal event: that is for the property to say
    return True


def _legal_at_the_end(subject: Subject, events: Sequence[Event], event: Event) -> bool:
    try:
        return is_legal(subject, subject.replay(copy.deepcopy(list(events))), event)
    except Exception:
        return False


def _fails(
    subject: Subject, prop: Property, events: Sequence[Event], failed: PropertyFailed
) -> PropertyFailed | None:
    if not _is_legal_log(subject, events):
        return None
    case = _case_for(prop, events, failed)
    if case.illegal is not None and _legal_at_the_end(subject, events, case.illegal):
        return None  # shrinking moved the illegal event to where it is legal
    try:
        check_case(subject, prop, case)
    except PropertyFailed as again:
        return again
    return None


def minimize(
    subject: Subject, prop: Property, failed: PropertyFailed, budget: int = 3000
) -> PropertyFailed:
    """The smallest log (and simplest payloads) that still breaks `prop`: cut the log after
    the event that broke it, drop stretches of events while the log stays legal and the
    property still fails, then give each event the simplest payload that keeps it failing.
    """
    events = list(failed.events)
    if len(events) < 2:
        return failed
    best = failed
    state = _Search(subject, prop, failed, budget)
    if failed.at is not None and failed.at + 1 < len(events):
        cut = events[: failed.at + 1]
        found = state.fails(cut)
        if found is not None:
            events, best = cut, found
    events, best = _drop_stretches(state, events, best)
    events, best = _simplify_payloads(state, events, best)
    return best


class _Search:
    def __init__(
        self, subject: Subject, prop: Property, failed: PropertyFailed, budget: int
    ) -> None:
        self.subject, self.prop, self.failed, self.budget = subject, prop, failed, budget

    def fails(self, events: Sequence[Event]) -> PropertyFailed | None:
        if self.budget <= 0:
            return None
        self.budget -= 1
        return _fails(self.subject, self.prop, events, self.failed)


def _drop_stretches(
    search: _Search, events: list[Event], best: PropertyFailed
) -> tuple[list[Event], PropertyFailed]:
    progress = True
    while progress and search.budget > 0:
        progress = False
        for size in range(len(events) - 1, 0, -1):
            start = 1
            while start + size <= len(events) and search.budget > 0:
                candidate = _repaired(search.subject, events[:start] + events[start + size :])
                found = search.fails(candidate)
                if found is not None:
                    events, best, progress = candidate, found, True
                else:
                    start += 1
    return events, best


def _repaired(subject: Subject, events: list[Event]) -> list[Event]:
    """`events` without the ones that are no longer legal where they now stand.

    Dropping a stretch can leave a later event stranded (a retry of a failure that is
    gone); without this repair, a failure that needs two removals at once (the stretch and
    the retry after it) would stay a local minimum."""
    first = events[0]
    if not isinstance(first, Started):
        return events
    try:
        state = subject.initial_state(first.input)
    except Exception:
        return events
    kept: list[Event] = [first]
    for index, event in enumerate(events[1:], start=1):
        if not is_legal(subject, state, event):
            continue
        kept.append(event)
        try:
            state = subject.reduce(state, event)
        except Exception:  # the reducer broke on a legal event: the property will say so
            return kept + events[index + 1 :]
    return kept


def _simplify_payloads(
    search: _Search, events: list[Event], best: PropertyFailed
) -> tuple[list[Event], PropertyFailed]:
    for index in range(len(events)):
        for simpler in simpler_events(search.subject, events[index]):
            if simpler == events[index]:
                break
            candidate = [*events[:index], simpler, *events[index + 1 :]]
            found = search.fails(candidate)
            if found is not None:
                events, best = candidate, found
                break
    return events, best
