"""`twelvefold test`: property-test agents' generated reducers and print their coverage."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import click

from twelvefold.commands.options import PROMPTS, GivenPath
from twelvefold.commands.output import error
from twelvefold.commands.report import Stage, saying
from twelvefold.interrupts import remembering
from twelvefold.runtime.loading import AgentLoadError
from twelvefold.runtime.terminal import one_line
from twelvefold.testing import DEFAULT_EXAMPLES, MAX_EXAMPLES
from twelvefold.testing.invariants import InvariantLoadError, find_invariants
from twelvefold.testing.subject import load_subject
from twelvefold.testing.suite import header, render_results, run_suite


@click.command("test")
@click.argument(
    "agents",
    nargs=-1,
    required=True,
    type=GivenPath(named="AGENT"),
)
@click.option(
    "--examples",
    type=click.IntRange(min=1, max=MAX_EXAMPLES),
    default=DEFAULT_EXAMPLES,
    show_default=True,
    help="Random threads per property.",
)
@click.option("--seed", type=int, help="Seed for the random threads (default: a new one, printed).")
@click.option("--paths", is_flag=True, help="Print the shortest event log that takes each edge.")
@click.option(
    "--strict",
    is_flag=True,
    help="Also fail on unreachable max_errors/max_steps edges (else they are notes).",
)
@click.option(
    "--source",
    type=GivenPath(),
    help="The .agent file a generated .py AGENT was compiled from (default: the file its "
    "header names, beside it); the module is judged against it.",
)
@PROMPTS
def test(
    agents: tuple[Path, ...],
    examples: int,
    seed: int | None,
    paths: bool,
    strict: bool,
    source: Path | None,
    prompts: Path | None,
) -> None:
    """Check the properties every AGENT's reducer must have, on generated threads.

    AGENT is an .agent file (or a generated module's .py file). Invariants are the
    `invariant_*(state, events)` functions in AGENT_invariants.py or invariants.py beside
    it. Exit status 1 when a property fails or an edge cannot be reached.
    """
    if source is not None and (len(agents) != 1 or agents[0].suffix != ".py"):
        raise click.UsageError("--source goes with exactly one generated .py module")
    chosen_seed = seed if seed is not None else random.randrange(2**32)
    # Ctrl-C is remembered as well as raised (`twelvefold` installed it already; here
    # for a caller that did not): hypothesis's garbage-collection callback can swallow
    # the exception, and each generated thread then ends the run.
    remembering()
    unloadable = property_failed = False
    stage = Stage("")
    for index, agent in enumerate(agents):
        stage.said = (
            f"`twelvefold test` stopped while checking {one_line(str(agent))}: nothing was "
            f"written; `--seed {chosen_seed}` generates the same threads again"
        )
        with saying(stage):
            unloadable, failed = _test_one(index, agent, chosen_seed, examples, paths, strict,
                                           source, prompts, unloadable)  # fmt: skip
            property_failed = property_failed or failed
    if property_failed:  # the seed reproduces generated threads, not a file that won't load
        click.echo(f"\nfailed (reproduce with --seed {chosen_seed})", err=True)
    if unloadable or property_failed:
        sys.exit(1)


def _test_one(
    index: int,
    agent: Path,
    seed: int,
    examples: int,
    paths: bool,
    strict: bool,
    source: Path | None,
    prompts: Path | None,
    unloadable: bool,
) -> tuple[bool, bool]:
    """Check one AGENT and print its report: (whether any AGENT so far would not load,
    whether a property of this one failed)."""
    if index:
        click.echo()
    try:
        subject = load_subject(agent, prompts_dir=prompts, source=source)
        invariants = find_invariants(agent)
    except AgentLoadError as broken:
        # A compile error's diagnostics are many lines, each escaping its own values:
        # printed as they are, as `run` prints them (commands/report.py).
        click.echo(f"error: {broken}", err=True)
        return True, False
    except InvariantLoadError as broken:
        error(broken)
        return True, False
    # The header first (click.echo flushes): the threads may take minutes, and a pipe
    # would otherwise see nothing until they are done.
    click.echo(header(subject, examples, seed))
    report = run_suite(subject, examples=examples, seed=seed, invariants=invariants, strict=strict)
    click.echo(render_results(report, paths=paths))
    return unloadable, not report.ok
