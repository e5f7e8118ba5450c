"""Stage 2: `SourceFile` -> `Program` and every diagnostic the static checks find.

Each check is a small function in compiler/checks/ over the program (and its networkx
graph) that returns its findings; the registry there runs them all, so one run reports
every problem in a file rather than the first.
"""

from __future__ import annotations

from collections.abc import Collection

from . import nodes as n
from .checks import run_checks
from .diagnostics import Diagnostic, error, sort_key
from .graph import build_graph
from .program import Program, PromptFile, PromptLoader


def no_prompts(name: str) -> PromptFile | None:
    return None


def check(
    source: n.SourceFile,
    *,
    load_prompt: PromptLoader = no_prompts,
    source_text: str = "",
    approver_groups: Collection[str] | None = None,
    config_name: str = "",
    allow_stdlib: Collection[str] = (),
) -> tuple[Program | None, list[Diagnostic]]:
    """Resolve and check one file. The program is None only when there is no agent to check.

    `approver_groups` are the groups the project's configuration (`config_name`) defines,
    read by the caller (this stays pure); None when the project has no configuration.
    """
    agent = source.agent
    if agent is None:
        return None, [
            error(
                "E101",
                "this file declares no agent",
                source.path,
                source.steps[0].span if source.steps else n.UNKNOWN_SPAN,
                help='start the file with `agent NAME "what it does" { start FIRST_STEP }`',
            )
        ]
    types: dict[str, n.TypeDecl] = {}
    for type_decl in source.types:
        types.setdefault(type_decl.name.text, type_decl)
    steps: dict[str, n.Step] = {}
    for step in source.steps:
        steps.setdefault(step.name.text, step)
    prompts: dict[str, PromptFile] = {}
    for step in source.steps:
        if isinstance(step, n.LlmStep) and step.prompt is not None:
            found = load_prompt(step.prompt.value)
            if found is not None:
                prompts[step.name.text] = found
    program = Program(
        source=source,
        agent=agent,
        types=types,
        steps=steps,
        graph=build_graph(agent, steps),
        prompts=prompts,
        source_text=source_text,
        approver_groups=None if approver_groups is None else frozenset(approver_groups),
        config_name=config_name,
        allow_stdlib=frozenset(allow_stdlib),
    )
    diagnostics = sorted(run_checks(program, load_prompt), key=sort_key)
    return program, diagnostics
