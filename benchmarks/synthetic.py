"""Synthetic agents of any size, shaped like real ones: hubs of an llm step with tools that
return to it, an approval before a sensitive tool, a question to a person, and a hand-off
to the next hub. Every state is reachable and can finish, so the checks do their full work."""

from __future__ import annotations

from pathlib import Path

STATES_PER_HUB = 6  # decide, lookup, approve, act, ask, hand_off


def synthetic_agent(states: int) -> str:
    hubs = max(1, (states - 2) // STATES_PER_HUB)
    lines = [
        f'agent synthetic{states} "A synthetic agent of about {states} states." {{',
        f"  max_steps {10 * states} -> escalate",
        "  max_errors 3 -> escalate",
        "  start decide_0",
        "}",
        'type Done "Finished." { message: string }',
        "type Result { value: float?, notes: list[string] }",
    ]
    for i in range(hubs):
        following = f"decide_{i + 1}" if i + 1 < hubs else "handed_off"
        lines += [
            f'type Lookup_{i} "Look something up." {{ query: string }}',
            f'type Act_{i} "Do something." {{ target: string, env: "test" | "live" }}',
            f'type Ask_{i} "Ask a person." {{ question: string }}',
            f'type Next_{i} "Hand over." {{ reason: string }}',
            f"llm decide_{i} -> Lookup_{i} | Act_{i} | Ask_{i} | Next_{i} | Done {{",
            '  prompt "synthetic/decide.j2"',
            f"  on Lookup_{i} -> lookup_{i}",
            f'  on Act_{i} if env == "live" -> approve_{i}',
            f"  on Act_{i} -> act_{i}",
            f"  on Ask_{i} -> ask_{i}",
            f"  on Next_{i} -> hand_off_{i}",
            "  on Done -> done",
            "}",
            f'tool lookup_{i}(Lookup_{i}) -> Result = "synthetic.tools:lookup" {{',
            f"  next decide_{i}",
            "}",
            f'approval approve_{i}(Act_{i}) {{ ask "Act on {{{{ target }}}}?" '
            f"on approved -> act_{i} on rejected -> decide_{i} }}",
            f'tool act_{i}(Act_{i}) -> Result = "synthetic.tools:act" {{',
            '  requires approval if env == "live"',
            f"  next decide_{i}",
            f"  on error -> decide_{i}",
            "}",
            f'human ask_{i}(Ask_{i}) {{ ask "{{{{ question }}}}" next decide_{i} }}',
            f'tool hand_off_{i}(Next_{i}) -> Result = "synthetic.tools:hand_off" {{',
            f"  next {following}",
            "}",
        ]
    lines += [
        'human escalate { ask "Stuck; please advise." next decide_0 }',
        "final done(Done)",
        "final handed_off",
    ]
    return "\n".join(lines) + "\n"


def write_synthetic(folder: Path, states: int) -> Path:
    """The agent file and its prompt, in `folder`."""
    return _write(folder, f"synthetic{states}.agent", synthetic_agent(states))


def _write(folder: Path, name: str, text: str) -> Path:
    """An agent file and the prompt its llm steps share, in `folder`."""
    prompts = folder / "prompts" / "synthetic"
    prompts.mkdir(parents=True, exist_ok=True)
    (prompts / "decide.j2").write_text("{{ context }}\nDecide what to do next.\n")
    agent = folder / name
    agent.write_text(text)
    return agent


def hub_agent(tools: int) -> str:
    """One llm step that can answer with any of `tools` types, each routed to its own tool
    that returns to it; every other tool requires approval for live values and has an
    approval in front. The shape that made type flow and approval dominance quadratic
    (issue 9: 1,000 tools took 3.9 s)."""
    outputs = " | ".join(f"Call_{i}" for i in range(tools))
    lines = [
        f'agent hub{tools} "One hub with {tools} tools." {{',
        f"  max_steps {10 * tools} -> escalate",
        "  max_errors 3 -> escalate",
        "  start decide",
        "}",
        'type Done "Finished." { message: string }',
        "type Result { value: float? }",
        f"llm decide -> {outputs} | Done {{",
        '  prompt "synthetic/decide.j2"',
        "  on Done -> done",
    ]
    for i in range(tools):
        if i % 2:
            lines.append(f'  on Call_{i} if env == "live" -> approve_{i}')
        lines.append(f"  on Call_{i} -> call_{i}")
    lines.append("}")
    for i in range(tools):
        lines.append(f'type Call_{i} "Call tool {i}." {{ target: string, env: "test" | "live" }}')
        lines.append(f'tool call_{i}(Call_{i}) -> Result = "synthetic.tools:call" {{')
        if i % 2:
            lines.append('  requires approval if env == "live"')
        lines += ["  next decide", "}"]
        if i % 2:
            lines.append(
                f'approval approve_{i}(Call_{i}) {{ ask "Call {{{{ target }}}}?" '
                f"on approved -> call_{i} on rejected -> decide }}"
            )
    lines += ['human escalate { ask "Stuck; please advise." next decide }', "final done(Done)"]
    return "\n".join(lines) + "\n"


def write_hub(folder: Path, tools: int) -> Path:
    """The hub agent file and its prompt, in `folder`."""
    return _write(folder, f"hub{tools}.agent", hub_agent(tools))
