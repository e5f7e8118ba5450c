"""`twelvefold test`: property-test agents' generated reducers and print their coverage."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import click

from twelvefold.commands.options import PROMPTS
from twelvefold.commands.output import error
from twelvefold.runtime.loading import AgentLoadError
from twelvefold.testing import DEFAULT_EXAMPLES, MAX_EXAMPLES
from twelvefold.testing.invariants import InvariantLoadError, find_invariants
from twelvefold.testing.subject import load_subject
from twelvefold.testing.suite import header, render_results, run_suite


@click.command("test")
@click.argument(
    "agents",
    nargs=-1,
    required=True,
    type=click.Path(path_type=Path),
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
    type=click.Path(path_type=Path),
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
    unloadable = property_failed = False
    for index, agent in enumerate(agents):
        if index:
            click.echo()
        try:
            subject = load_subject(agent, prompts_dir=prompts, source=source)
            invariants = find_invariants(agent)
        except (AgentLoadError, InvariantLoadError) as broken:
            error(broken)
            unloadable = True
            continue
        # The header first (click.echo flushes): the threads may take minutes, and a
        # pipe would otherwise see nothing until they are done.
        click.echo(header(subject, examples, chosen_seed))
        report = run_suite(
            subject, examples=examples, seed=chosen_seed, invariants=invariants, strict=strict
        )
        click.echo(render_results(report, paths=paths))
        property_failed = property_failed or not report.ok
    if property_failed:  # the seed reproduces generated threads, not a file that won't load
        click.echo(f"\nfailed (reproduce with --seed {chosen_seed})", err=True)
    if unloadable or property_failed:
        sys.exit(1)
