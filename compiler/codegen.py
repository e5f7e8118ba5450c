"""Stage 3: `Program` -> {file name: Python source}. (Being written; see generate().)"""

from __future__ import annotations

from .program import Program


def module_name(agent_name: str) -> str:
    """The generated module's file stem: the agent's name, made a safe Python identifier."""
    return agent_name if agent_name.isidentifier() else "agent_" + agent_name


def generate(program: Program) -> dict[str, str]:
    raise NotImplementedError("codegen lands next")
