"""Files a .agent file names: `import "common.agent"` (shared types) and sub-agents
(`agent NAME(IN) -> OUT = "child.agent"`).

Both are resolved relative to the folder of the file that names them. An import brings
the imported file's type declarations in (a local declaration of the same name wins);
a sub-agent's file is compiled (checks only) so that the types at the boundary can be
compared and a cycle of agents calling each other refused. Reading files is the one
impure thing here; everything it finds comes back as diagnostics at the naming span.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from . import nodes as n
from .diagnostics import Diagnostic, error, has_errors
from .limits import read_source

CHAIN_LIMIT = 16
"""How deep sub-agents may nest: deeper is surely a mistake (and each level is compiled)."""


def child_path(base_dir: Path, name: str) -> Path:
    """Where a named file is: relative to the naming file's folder (absolute paths too).
    A path that cannot be resolved (a loop of symbolic links) is returned as written, so
    reading it fails with the error its diagnostic reports."""
    path = base_dir / name
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # Python 3.11/3.12 raise RuntimeError for a loop
        return path.absolute()


IMPORT_DEPTH_LIMIT = 16
"""How deep imports may nest (a file importing a file importing ...): deeper is surely a
mistake, and each level is read."""


def resolve_imports(
    source: n.SourceFile, base_dir: Path, here: str | None = None
) -> tuple[n.SourceFile, list[Diagnostic]]:
    """`source` with the types of the files it imports added, and of the files those
    import, down the line (each path relative to the folder of the file that names it).
    A type declared here wins over an imported one of the same name, and an earlier import
    over a later one. `here`: this file's resolved path, for cycles.

    Diagnostics are reported at this file's `import` that leads to the problem: E130 (a
    file that cannot be read), E131 (one that does not parse or holds more than types and
    imports), E136 (imports that lead back to a file on the way, or nest deeper than
    IMPORT_DEPTH_LIMIT)."""
    diagnostics: list[Diagnostic] = []
    local = {t.name.text for t in source.types}
    added: list[n.TypeDecl] = []
    origins: list[n.TypeOrigin] = []
    root = (here,) if here is not None else ()
    for imported in source.imports:
        found: list[tuple[n.TypeDecl, Path]] = []
        path = child_path(base_dir, imported.file.value)
        problem = _read_imports(
            source.path, imported, imported.file.value, path, root, found, set()
        )
        if problem is not None:
            diagnostics.append(problem)  # the types read before it still count: one error
        for type_decl, declared_in in found:
            if type_decl.name.text not in local:
                local.add(type_decl.name.text)
                added.append(type_decl)
                where = _shown_path(declared_in, source.path, base_dir)
                origins.append(n.TypeOrigin(type_decl.name.text, where, imported))
    imported_names = frozenset(t.name.text for t in added)
    linked = replace(
        source, types=(*source.types, *added), imported=imported_names, origins=tuple(origins)
    )
    return linked, diagnostics


def _shown_path(path: Path, importer: str, base_dir: Path) -> str:
    """`path` (an imported file, resolved) as diagnostics show it: beside the importing
    file's own path as the user wrote it (`agents/a.agent` imports `agents/lib/t.agent`)
    when it is under that file's folder, else as resolved."""
    try:
        inside = path.relative_to(base_dir.resolve())
    except (ValueError, OSError):
        return str(path)
    return str(Path(importer).parent / inside)


def _read_imports(
    where: str,
    named: n.Import,
    written: str,
    path: Path,
    chain: tuple[str, ...],
    found: list[tuple[n.TypeDecl, Path]],
    read: set[str],
) -> Diagnostic | None:
    """Add to `found` the types of the file at `path` (named `written` by the file that
    imports it) and of the files it imports, each with the file it is declared in, depth
    first (`chain`: the files importing it, outermost first; `read`: the files already
    read, so a file imported twice is read once). The first problem met, as a diagnostic
    at `named` (the compiled file's import that leads to it), or None."""
    from .parser import parse

    label = named.file.value
    nested = bool(read)  # the compiled file's own import is the first file read
    if str(path) in chain:
        looped = chain[chain.index(str(path)) :]
        cycle = " -> ".join(Path(p).name for p in (*looped, str(path)))
        return error(
            "E136",
            f'`import "{label}"` leads back to a file that imports it: {cycle}',
            where,
            named.file.span,
            label="a cycle of imports",
            help="move the types both files need into a third file that imports nothing, "
            "and import that one from each",
        )
    if len(chain) > IMPORT_DEPTH_LIMIT:  # the compiled file and 16 imports below it
        return error(
            "E136",
            f'`import "{label}"` nests imports more than {IMPORT_DEPTH_LIMIT} files deep',
            where,
            named.file.span,
            label="too deep",
            help=f"imports may nest at most {IMPORT_DEPTH_LIMIT} files deep; import the "
            "files of types you need directly",
        )
    if str(path) in read:
        return None
    read.add(str(path))
    via = f" (imported through `{label}`)" if nested else ""
    text, unreadable = read_source(path, written)
    if unreadable or not path.is_file():
        if not nested:
            return _missing(where, named.file, "imported file")
        return error(
            "E130",
            f'imported file "{written}"{via} cannot be read',
            where,
            named.file.span,
            label="no such file",
            help="name a .agent file relative to the folder of the file that imports it",
        )
    other, problems = parse(text, str(path))
    if has_errors(problems) or other.agents or other.steps:
        return error(
            "E131",
            f'`import "{written}"`{via}: the file must hold type declarations only',
            where,
            named.file.span,
            label="not a file of types" if not has_errors(problems) else "does not parse",
            help=f"run `twelvefold check {label}`; keep only `type` declarations (and "
            "`import`s of other files of types) in a file other agents import",
        )
    found.extend((type_decl, path) for type_decl in other.types)
    for nested_import in other.imports:
        inner = nested_import.file.value
        problem = _read_imports(
            where, named, inner, child_path(path.parent, inner), (*chain, str(path)), found, read
        )
        if problem is not None:
            return problem
    return None


def check_children(
    source: n.SourceFile,
    base_dir: Path,
    chain: tuple[str, ...],
    prompts_of: Callable[[Path], Path] | None = None,
) -> list[Diagnostic]:
    """Each sub-agent's file compiles, takes the step's input type and finishes with its
    output type (same name, same fields, recursively), and no agent calls itself through
    a chain of sub-agents (`chain`: the files being compiled, outermost first). A child's
    templates are read from `prompts_of(its file)` (None: the nearest `prompts/`)."""
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
        child = compile_file(
            path,
            prompts_dir=prompts_of(path) if prompts_of else None,
            generate_code=False,
            agent_chain=chain,
            prompts_of=prompts_of,
        )
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
