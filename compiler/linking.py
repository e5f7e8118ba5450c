"""Files a .agent file names: `import "common.agent"` (shared types) and sub-agents
(`agent NAME(IN) -> OUT = "child.agent"`).

Both are resolved relative to the folder of the file that names them. An import brings
the imported file's type declarations in (a local declaration of the same name wins);
a sub-agent's file is compiled (checks only) so that the types at the boundary can be
compared and a cycle of agents calling each other refused. Reading files is the one
impure thing here; everything it finds comes back as diagnostics at the naming span.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from . import nodes as n
from .diagnostics import Diagnostic, error, has_errors
from .limits import read_source

CHAIN_LIMIT = 16
"""How deep sub-agents may nest: deeper is surely a mistake (and each level is compiled)."""


def child_path(base_dir: Path, name: str) -> Path:
    """Where a named file is: relative to the naming file's folder (absolute paths too)."""
    return (base_dir / name).resolve()


def resolve_imports(source: n.SourceFile, base_dir: Path) -> tuple[n.SourceFile, list[Diagnostic]]:
    """`source` with the types of the files it imports added (E130: a file that cannot
    be read; E131: one that does not parse or holds more than types)."""
    from .parser import parse

    diagnostics: list[Diagnostic] = []
    local = {t.name.text for t in source.types}
    added: list[n.TypeDecl] = []
    for imported in source.imports:
        path = child_path(base_dir, imported.file.value)
        text, unreadable = read_source(path, imported.file.value)
        if unreadable or not path.is_file():
            diagnostics.append(_missing(source.path, imported.file, "imported file"))
            continue
        other, found = parse(text, imported.file.value)
        if has_errors(found) or other.agents or other.steps or other.imports:
            diagnostics.append(
                error(
                    "E131",
                    f'`import "{imported.file.value}"`: the file must hold type declarations only',
                    source.path,
                    imported.file.span,
                    label="not a file of types" if not has_errors(found) else "does not parse",
                    help=f"run `twelvefold check {imported.file.value}`; keep only `type` "
                    "declarations in a file other agents import (no agent, steps or imports)",
                )
            )
            continue
        for type_decl in other.types:
            if type_decl.name.text not in local:
                local.add(type_decl.name.text)
                added.append(type_decl)
    imported_names = frozenset(t.name.text for t in added)
    return replace(source, types=(*source.types, *added), imported=imported_names), diagnostics


def check_children(
    source: n.SourceFile, base_dir: Path, chain: tuple[str, ...]
) -> list[Diagnostic]:
    """Each sub-agent's file compiles, takes the step's input type and finishes with its
    output type (same name, same fields, recursively), and no agent calls itself through
    a chain of sub-agents (`chain`: the files being compiled, outermost first)."""
    from .api import compile_file

    diagnostics: list[Diagnostic] = []
    types = {t.name.text: t for t in source.types}
    for step in source.steps:
        if not isinstance(step, n.AgentStep):
            continue
        path = child_path(base_dir, step.file.value)
        if str(path) in chain:
            cycle = " -> ".join(Path(p).name for p in (*chain, str(path)))
            diagnostics.append(
                error(
                    "E134",
                    f"agent `{step.name.text}` calls an agent that calls it back: {cycle}",
                    source.path,
                    step.file.span,
                    label="a cycle of sub-agents",
                    help="agents that call each other would never end; let the child return "
                    "a value and the parent decide what to do next",
                )
            )
            continue
        if len(chain) >= CHAIN_LIMIT:
            diagnostics.append(
                error(
                    "E134",
                    f"agent `{step.name.text}` calls sub-agents more than {CHAIN_LIMIT} "
                    f"levels deep (from {Path(chain[0]).name})",
                    source.path,
                    step.file.span,
                    label="too deep",
                    help=f"sub-agents may nest at most {CHAIN_LIMIT} levels; let a child "
                    "do more itself rather than call another agent",
                )
            )
            continue
        if not path.is_file():
            diagnostics.append(_missing(source.path, step.file, "sub-agent"))
            continue
        child = compile_file(path, generate_code=False, agent_chain=chain)
        if not child.ok or child.program is None:
            cycles = [d for d in child.diagnostics if d.code == "E134"]
            if cycles:
                diagnostics.append(replace(cycles[0], path=source.path, span=step.file.span))
                continue
            first = next((d for d in child.diagnostics if d.severity == "error"), None)
            where = f" ({first.path}:{first.span}: {first.code})" if first else ""
            diagnostics.append(
                error(
                    "E132",
                    f"sub-agent `{step.name.text}`: `{step.file.value}` does not compile{where}",
                    source.path,
                    step.file.span,
                    label="has errors",
                    help=f"run `twelvefold check {step.file.value}` and fix what it reports",
                )
            )
            continue
        program = child.program
        child_types = program.types
        child_input = program.agent.input.text if program.agent.input else None
        if step.input is not None and step.input.text in types:
            wanted = step.input.text
            if child_input != wanted or not same_type(wanted, types, child_types):
                diagnostics.append(
                    _boundary(
                        source.path,
                        step,
                        step.input,
                        f"sub-agent `{step.name.text}` takes `{child_input or 'no input'}`, "
                        f"not `{wanted}`",
                        f"declare `input {wanted}` in {step.file.value} with the same fields "
                        "(share it: put the type in a file both `import`)",
                    )
                )
        output = step.output.text
        finals = {
            s.input.text
            for s in program.steps.values()
            if isinstance(s, n.FinalStep) and s.input is not None
        }
        if output in types and (output not in finals or not same_type(output, types, child_types)):
            diagnostics.append(
                _boundary(
                    source.path,
                    step,
                    step.output,
                    f"sub-agent `{step.name.text}` never finishes with `{output}`",
                    f"give {step.file.value} a `final NAME({output})` step, with `{output}` "
                    "declared alike in both files (share it with `import`)",
                )
            )
    return diagnostics


def same_type(name: str, ours: dict[str, n.TypeDecl], theirs: dict[str, n.TypeDecl]) -> bool:
    """Whether `name` means the same record in both files: the same fields, in order,
    of the same types, and the record types they name alike (recursively)."""
    seen: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        mine, yours = ours.get(current), theirs.get(current)
        if mine is None or yours is None:
            if (mine is None) != (yours is None):
                return False
            continue  # a scalar or a built-in
        if _shape(mine) != _shape(yours):
            return False
        pending.extend(_named(mine))
    return True


def _shape(decl: n.TypeDecl) -> tuple[tuple[str, object, bool], ...]:
    return tuple((f.name.text, f.type, f.secret) for f in decl.fields)


def _named(decl: n.TypeDecl) -> list[str]:
    return [t.name for f in decl.fields for t in n.named_types(f.type)]


def _missing(path: str, file: n.Text, what: str) -> Diagnostic:
    return error(
        "E130",
        f'{what} "{file.value}" cannot be read',
        path,
        file.span,
        label="no such file",
        help="name a .agent file relative to this file's folder, e.g. "
        f'"{Path(file.value).name or "common.agent"}" beside it',
    )


def _boundary(path: str, step: n.AgentStep, at: n.Name, message: str, help: str) -> Diagnostic:
    return error("E133", message, path, at.span, label="types differ at the boundary", help=help)
