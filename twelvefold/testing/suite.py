"""One agent, all of it: the properties, coverage, shortest paths, and a report for people.

`twelvefold test` and the pytest plugin both run `run_suite` and print `render`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from twelvefold.runtime.terminal import one_line

from . import DEFAULT_EXAMPLES
from .coverage import Coverage, Exploration, budget_paths, describe_edge, explore
from .invariants import Invariant
from .oracle import source_paths
from .properties import format_event, properties_for
from .runner import Outcome, run_properties
from .subject import Subject

WRITTEN_EDGES = frozenset({"output", "next", "error", "approved", "rejected"})
"""Edges the user wrote. The ceiling edges (`max_errors`, `max_steps`) leave every step
that can fail or act, whether or not the counts can get there from that step."""


@dataclass
class SuiteReport:
    subject: Subject
    outcomes: list[Outcome]
    coverage: Coverage
    exploration: Exploration
    examples: int
    seed: int | None
    invariants: Sequence[Invariant] = field(default_factory=tuple)
    strict: bool = False

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def unreachable(self) -> list[int]:
        """Edges no legal log takes (or none within the search's bound)."""
        return self.exploration.unreached(self.subject)

    def blocking_unreachable(self) -> list[int]:
        edges = self.subject.spec.edges
        return [i for i in self.unreachable() if self.strict or edges[i].kind in WRITTEN_EDGES]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocking_unreachable()


def run_suite(
    subject: Subject,
    *,
    examples: int = DEFAULT_EXAMPLES,
    seed: int | None = None,
    invariants: Sequence[Invariant] = (),
    strict: bool = False,
) -> SuiteReport:
    exploration = explore(subject)
    coverage = Coverage(subject)
    outcomes = run_properties(
        subject,
        properties_for(subject, invariants),
        examples=examples,
        seed=seed,
        coverage=coverage,
        paths=[*exploration.paths.values(), *source_paths(subject)],
        long_paths=budget_paths(subject),
    )
    return SuiteReport(
        subject, outcomes, coverage, exploration, examples, seed, tuple(invariants), strict
    )


def render(report: SuiteReport, *, paths: bool = False) -> str:
    return (
        header(report.subject, report.examples, report.seed)
        + "\n"
        + render_results(report, paths=paths)
    )


def header(subject: Subject, examples: int, seed: int | None) -> str:
    """The report's first line: what is tested, with how many threads and which seed
    (known before the threads are generated: `twelvefold test` prints it first)."""
    seeded = f", seed {seed}" if seed is not None else ""
    # One line, its control characters escaped, as every line of the results is.
    return one_line(f"{subject.name} ({subject.origin}): {examples} threads per property{seeded}")


def render_results(report: SuiteReport, *, paths: bool = False) -> str:
    """The report after its `header`."""
    subject = report.subject
    lines: list[str] = []
    if subject.source is None:
        lines.append(
            f"  note: no .agent source found for it (its header names {subject.spec.source}); "
            "it is judged by its own AGENT only — give --source FILE to check it against "
            "the source"
        )
    elif subject.reference is not None:
        lines.append(f"  judged against its source {subject.source}")
    for outcome in report.outcomes:
        mark = "ok  " if outcome.ok else "FAIL"
        lines.append(f"  {mark}  {outcome.prop.name}")
    for outcome in report.failed:
        lines += ["", f"{outcome.prop.name} fails; minimal failing example:"]
        lines += [f"  {line}" for line in str(outcome.failure).split("\n")]

    lines += ["", "coverage by the generated threads:"]
    missed = report.coverage.missed()
    for what, (covered, total) in report.coverage.summary().items():
        line = f"  {what:<13} {covered:>3}/{total:<3}"
        if missed[what]:
            line += "  not taken: " + ", ".join(missed[what])
        lines.append(line)

    spec = subject.spec
    reached = len(report.exploration.paths)
    lines += [
        "",
        f"shortest paths reach {reached}/{len(spec.edges)} edges "
        f"({report.exploration.explored} states explored)",
    ]
    blocking = set(report.blocking_unreachable())
    why = "no legal log takes it" if report.exploration.exhausted else "not reached in the bound"
    for index in report.unreachable():
        level = "error" if index in blocking else "note"
        lines.append(f"  {level}: {describe_edge(spec.edges[index])}: {why}")
    if paths:
        for index, edge in enumerate(spec.edges):
            path = report.exploration.paths.get(index)
            if path is None:
                continue
            lines.append(f"  {describe_edge(edge)}  ({len(path)} events)")
            lines += [f"      {format_event(event)}" for event in path]
    # Names, file names and a module's header are the user's: each line is printed as one
    # line, its control characters (a line break, an ANSI escape) escaped.
    return "\n".join(one_line(line.rstrip()) for line in lines)
