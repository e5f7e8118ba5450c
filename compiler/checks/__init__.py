"""The static checks, one small function each, and the registry that runs them all.

A check takes the program (and the prompt loader, for the ones that read templates)
and returns its diagnostics. Checks never assume another check passed: each skips
what it cannot judge (an unknown name, a missing setting), because those are reported
once, where they are written. Add a check by writing the function in the module of its
family and listing it in CHECKS.

    names.py         E1xx  names resolve, no duplicates, settings present and in range
    routing.py       E2xx  exhaustive routing (llm outputs, tool results), reachable rules,
                           well-typed guards
    reachability.py  E3xx  reachable from start, can finish
    typeflow.py      E4xx  values arriving at a step are of its declared type
    templates.py     E403, E7xx  ask and prompt templates
    approval.py      E5xx  approval dominance, null skipping it, approvals that show the
                           value; W510 approvers the configuration lacks
    origins.py       E504  the model cannot decide its own approval (a note when the
                           file says `# trusts model: FIELD`)
    loops.py         E6xx  bounded loops
    budgets.py       E121, E604, W605  `max_cost` and `max_tokens`
    size.py          W8xx  agents that are probably two
    unused.py        W9xx  unused types and states
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..diagnostics import Diagnostic
from ..program import Program, PromptLoader
from . import (
    approval,
    budgets,
    loops,
    names,
    origins,
    reachability,
    routing,
    size,
    templates,
    typeflow,
    unused,
)

Check = Callable[[Program, PromptLoader], Iterable[Diagnostic]]

CHECKS: list[Check] = [
    # E1xx
    names.duplicate_declarations,
    names.reserved_names,
    names.unknown_states,
    names.missing_start,
    names.unknown_types,
    names.map_keys,
    names.types_nest_within_the_limit,
    names.types_have_values,
    names.llm_outputs_are_records,
    names.waits_are_for_records,
    names.timers_take_time,
    names.sleeps_until_a_time,
    names.function_paths,
    names.stdlib_tools,
    names.module_file_names,
    names.checks_have_retries,
    names.number_settings,
    budgets.cost_is_an_amount,
    names.context_settings,
    names.required_settings,
    # E2xx
    routing.exhaustive_routing,
    routing.rules_name_outputs,
    routing.unreachable_rules,
    routing.guard_types,
    routing.next_or_rules,
    # E3xx
    reachability.reachable_from_start,
    reachability.can_finish,
    # E4xx
    typeflow.values_match_inputs,
    templates.ask_templates,
    # E5xx
    approval.approval_dominates,
    approval.null_cannot_skip,
    approval.approval_shows_the_input,
    approval.approvers_are_defined,
    origins.model_cannot_decide_its_approval,
    # E6xx
    loops.cycles_pass_a_decision,
    loops.cycles_are_bounded,
    budgets.budgets_stop_the_model,
    # E7xx
    templates.prompt_templates,
    templates.render_templates,
    # W8xx, W9xx
    size.agent_size,
    unused.unused_types,
    unused.unused_states,
]


def run_checks(program: Program, load_prompt: PromptLoader) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    for check in CHECKS:
        found.extend(check(program, load_prompt))
    return found
