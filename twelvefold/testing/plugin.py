"""pytest plugin: `.agent` files as test files, one test per property.

Collection is opt-in, because a repository may hold `.agent` files that are meant to be
broken (a compiler's own test fixtures). An `.agent` file is collected when it is

- under a path given with `--agents PATH` (repeatable), or listed in the ini option
  `twelvefold_agents` (paths relative to the rootdir), and pytest walks it; or
- named on the command line: `pytest examples/deploybot.agent`.

Each file yields one item per property (`deploybot.agent::max_steps_ceiling`), one for the
user's invariants when there are any, and `edges_reachable`. The properties share one
run of generated threads per file.

pytest loads this plugin in every project of an environment where twelvefold is installed,
so importing it costs nothing and can break nothing: the compiler, the runtime and
hypothesis are imported only when an `.agent` file is actually collected.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import DEFAULT_EXAMPLES

if TYPE_CHECKING:
    from .subject import Subject
    from .suite import SuiteReport

INI_AGENTS = "twelvefold_agents"
INI_EXAMPLES = "twelvefold_examples"
REACHABLE = "edges_reachable"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("twelvefold", "property tests for .agent files")
    group.addoption(
        "--agents",
        action="append",
        default=[],
        metavar="PATH",
        help="Collect the .agent files under PATH as property tests (repeatable).",
    )
    group.addoption(
        "--agents-examples",
        type=int,
        default=None,
        metavar="N",
        help=f"Random threads per property (default: ini {INI_EXAMPLES}, else {DEFAULT_EXAMPLES}).",
    )
    group.addoption(
        "--agents-seed",
        type=int,
        default=None,
        metavar="S",
        help="Seed for the random threads (default: derived from each test, reproducible).",
    )
    parser.addini(INI_AGENTS, "Paths whose .agent files are property-tested.", type="paths")
    parser.addini(INI_EXAMPLES, "Random threads per property.", default=str(DEFAULT_EXAMPLES))


def _roots(config: pytest.Config) -> list[Path]:
    given = [Path(p).resolve() for p in config.getoption("--agents")]
    listed = [Path(p).resolve() for p in config.getini(INI_AGENTS)]
    named = [Path(arg.split("::")[0]).resolve() for arg in config.args]
    return given + listed + [p for p in named if p.suffix == ".agent"]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> AgentFile | None:
    if file_path.suffix != ".agent":
        return None
    path = file_path.resolve()
    if any(path == root or root in path.parents for root in _roots(parent.config)):
        return AgentFile.from_parent(parent, path=file_path)
    return None


class AgentFile(pytest.File):
    """An `.agent` file: compiled once, its properties checked together on first use."""

    _subject: Subject | None = None
    _report: SuiteReport | None = None

    def collect(self) -> Iterator[pytest.Item]:
        from .invariants import find_invariants
        from .properties import properties_for
        from .subject import load_subject

        self._subject = load_subject(self.path)
        invariants = find_invariants(self.path)
        for prop in properties_for(self._subject, invariants):
            yield PropertyItem.from_parent(self, name=prop.name)
        yield PropertyItem.from_parent(self, name=REACHABLE)

    def report(self) -> SuiteReport:
        from .invariants import find_invariants
        from .suite import run_suite

        if self._report is None:
            assert self._subject is not None
            config = self.config
            examples = config.getoption("--agents-examples") or int(config.getini(INI_EXAMPLES))
            self._report = run_suite(
                self._subject,
                examples=examples,
                seed=config.getoption("--agents-seed"),
                invariants=find_invariants(self.path),
            )
        return self._report


class AgentTestFailed(Exception):
    """A property failed, or an edge cannot be reached; the message says which and how."""


class PropertyItem(pytest.Item):
    def runtest(self) -> None:
        parent = self.parent
        assert isinstance(parent, AgentFile)
        report = parent.report()
        if self.name == REACHABLE:
            from .coverage import describe_edge

            blocked = report.blocking_unreachable()
            if blocked:
                edges = report.subject.spec.edges
                lines = [describe_edge(edges[i]) for i in blocked]
                raise AgentTestFailed("no legal event log takes:\n  " + "\n  ".join(lines))
            return
        (outcome,) = [o for o in report.outcomes if o.prop.name == self.name]
        if outcome.failure is not None:
            raise outcome.failure

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        from .properties import PropertyFailed

        if isinstance(excinfo.value, PropertyFailed | AgentTestFailed):
            return f"{self.name}: {excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.path.name}::{self.name}"
