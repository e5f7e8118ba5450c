"""E12x, E604, W605: the budgets (`max_cost USD -> STATE`, `max_tokens N -> STATE`).

A budget bounds what a thread's model calls spend; the reducer sends the thread to the
budget's target once the `llm` steps' events have recorded that much (runtime/spec.py).
So the amount must be a positive number, and the target must not be an `llm` step: the
promise is that no model call starts once the budget is spent, and going to an `llm` step
would start one at once. A budget on an agent without an `llm` step never applies.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from .. import nodes as n
from ..diagnostics import Diagnostic, error, warning
from ..program import Program


def _budgets(agent: n.AgentDecl) -> Iterator[tuple[str, n.Ceiling]]:
    for what, budget in (("max_cost", agent.max_cost), ("max_tokens", agent.max_tokens)):
        if budget is not None:
            yield what, budget


def cost_is_an_amount(program: Program, _: object) -> Iterator[Diagnostic]:
    """`max_cost` is a positive amount of US dollars (whole or with cents)."""
    budget = program.agent.max_cost
    if budget is None:
        return
    value = budget.limit.value
    if not math.isfinite(value) or value <= 0:
        yield error(
            "E121",
            f"`max_cost` must be a positive amount of US dollars, not {value}",
            program.source.path,
            budget.limit.span,
            label="expected an amount above 0",
            help="write the most a thread may spend on model calls, e.g. `max_cost 2.50`",
        )


def budgets_stop_the_model(program: Program, _: object) -> Iterator[Diagnostic]:
    """A budget's target is not an `llm` step; a budget needs an `llm` step to apply to."""
    path = program.source.path
    llm_steps = [s for s in program.source.steps if isinstance(s, n.LlmStep)]
    for what, budget in _budgets(program.agent):
        target = budget.target
        step = program.steps.get(target.text) if target is not None else None
        if target is not None and isinstance(step, n.LlmStep):
            yield error(
                "E604",
                f"`{what}` goes to `{target.text}`, an llm step: a thread over its budget "
                "would call the model again at once",
                path,
                target.span,
                label="calls the model",
                help=f"send the thread to a person (a `human` or `approval` step), a tool "
                f"or a final state, or write `{what} {budget.limit.value}` to fail it",
            )
        if not llm_steps:
            yield warning(
                "W605",
                f"`{what}` bounds model calls, but agent `{program.name}` has no llm step",
                path,
                budget.span,
                label="never spent",
                help=f"remove `{what}`: only `llm` steps (and their judges) spend it",
            )
