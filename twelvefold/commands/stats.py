"""`twelvefold stats`: what the threads in a store cost, per agent.

Read from the stored rows without loading any agent (runtime/usage.py): threads by
status, steps, model calls, tokens, cost, and the time threads waited for people (a wait
still open counts up to now).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import click

from twelvefold.commands.options import DB
from twelvefold.commands.output import damaged_rows, echo, flag_damaged
from twelvefold.commands.run import JSON
from twelvefold.runtime.api import shown
from twelvefold.runtime.store import StoreLocation, ThreadInfo, open_store
from twelvefold.runtime.terminal import one_line
from twelvefold.runtime.usage import Totals, by_thread, duration_text

STATUSES = ("running", "waiting", "finished", "failed", "cancelled")


@dataclass
class AgentStats:
    """One agent's threads in a store, added up."""

    threads: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    usage: Totals = field(default_factory=Totals)

    def to_json(self) -> dict[str, Any]:
        usage = self.usage.to_json() | {
            "calls_without_input_count": self.usage.uncounted_input,
            "calls_without_output_count": self.usage.uncounted_output,
        }
        return {"threads": dict(self.threads), "usage": usage}


def gather(infos: list[ThreadInfo], spent: dict[str, Totals]) -> dict[str, AgentStats]:
    """Per agent name (sorted): the count of its threads by status and their totals."""
    found: dict[str, AgentStats] = {}
    for info in infos:
        stats = found.setdefault(info.agent, AgentStats())
        stats.threads[info.status] = stats.threads.get(info.status, 0) + 1
        stats.usage = stats.usage + spent.get(info.id, Totals())
    return dict(sorted(found.items()))


@click.command()
@DB
@JSON
def stats(db: StoreLocation, as_json: bool) -> None:
    """Print per agent: threads by status, steps, tokens, cost, time waiting for people."""
    store = open_store(db, create=False)
    try:
        per_agent = gather(store.threads(), by_thread(store.usage_records(), own=True))
        damaged = damaged_rows(store)  # not counted; said last, exit 1
    finally:
        store.close()
    _print_stats(db, per_agent, as_json)
    flag_damaged(db, damaged)


def _print_stats(db: StoreLocation, per_agent: dict[str, AgentStats], as_json: bool) -> None:
    if as_json:
        echo(json.dumps({name: s.to_json() for name, s in per_agent.items()}))
        return
    if not per_agent:
        echo(f"no threads in {one_line(str(db))}")
        return
    total = AgentStats()
    for s in per_agent.values():
        total.usage = total.usage + s.usage
        for status, count in s.threads.items():
            total.threads[status] = total.threads.get(status, 0) + count
    # A status twelvefold does not know (a row edited by hand) is counted too: the table
    # adds a column for such threads and a line naming their statuses.
    others = {status: n for status, n in total.threads.items() if status not in STATUSES and n}
    other = f" {'OTHER':>5}" if others else ""
    echo(
        f"{'AGENT':<16} {'RUN':>4} {'WAIT':>4} {'DONE':>5} {'FAIL':>4} {'CANC':>4}{other} "
        f"{'STEPS':>6} {'CALLS':>6} {'TOKENS IN':>10} {'TOKENS OUT':>10} {'COST':>10}  WAITED"
    )
    for name, s in per_agent.items():
        echo(_row(shown(name), s, others=bool(others)))
    if len(per_agent) > 1:
        echo(_row("(all)", total, others=bool(others)))
    if others:
        named = ", ".join(f"{one_line(status)} ({n})" for status, n in sorted(others.items()))
        echo(f"OTHER: threads with a status twelvefold does not know: {named}")
    if total.usage.unpriced_calls:
        echo(
            f"{total.usage.unpriced_calls} model call(s) have no price: set one in "
            "[tool.twelvefold.prices] (docs/runtime.md, Cost)"
        )


def _row(name: str, s: AgentStats, *, others: bool) -> str:
    t, u = s.threads, s.usage
    waited = duration_text(u.waited_seconds) if u.waited_seconds else "-"
    cost = u.cost_text if u.model_calls else "-"
    other = sum(n for status, n in t.items() if status not in STATUSES)
    return (
        f"{name[:16]:<16} {t.get('running', 0):>4} {t.get('waiting', 0):>4} "
        f"{t.get('finished', 0):>5} {t.get('failed', 0):>4} {t.get('cancelled', 0):>4}"
        + (f" {other:>5}" if others else "")
        + f" {u.steps:>6} {u.model_calls:>6} "
        f"{u.input_tokens_text:>10} {u.output_tokens_text:>10} {cost:>10}  {waited}"
    )
