"""`twelvefold check` and `twelvefold compile`."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import click

from twelvefold.commands.options import PROMPTS
from twelvefold.compiler import Compilation, compile_file
from twelvefold.compiler.codegen import FormatterUnavailable
from twelvefold.compiler.diagnostics import render_all, render_json, summary


def _compile_all(
    files: tuple[Path, ...], prompts: Path | None, generate_code: bool
) -> list[Compilation]:
    try:
        return [compile_file(f, prompts_dir=prompts, generate_code=generate_code) for f in files]
    except FormatterUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _report(results: list[Compilation], output_format: str) -> int:
    diagnostics = [d for r in results for d in r.diagnostics]
    if output_format == "json":
        click.echo(render_json(diagnostics))
    elif diagnostics:
        sources = {r.path: r.source_text for r in results}
        click.echo(render_all(diagnostics, sources), err=True)
        click.echo(f"\n{summary(diagnostics)}", err=True)
    return 0 if all(r.ok for r in results) else 1


FILES = click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
FORMAT = click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="How to print diagnostics.",
)


@click.command()
@FILES
@PROMPTS
@FORMAT
def check(files: tuple[Path, ...], prompts: Path | None, output_format: str) -> None:
    """Parse and check agents; print diagnostics. Exit 1 when there are errors."""
    results = _compile_all(files, prompts, generate_code=False)
    code = _report(results, output_format)
    if code == 0 and output_format == "text":
        click.echo(f"ok: {len(files)} file{'s' if len(files) != 1 else ''} checked", err=True)
    sys.exit(code)


@click.command("compile")
@FILES
@click.option(
    "-o",
    "--output",
    "output_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder to write the generated modules to.",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; exit 1 when a module in the output folder is missing or stale.",
)
@PROMPTS
@FORMAT
def compile_(
    files: tuple[Path, ...],
    output_dir: Path,
    check_only: bool,
    prompts: Path | None,
    output_format: str,
) -> None:
    """Compile agents to plain Python reducer modules, one per agent."""
    results = _compile_all(files, prompts, generate_code=True)
    code = _report(results, output_format)
    if code != 0:
        sys.exit(code)
    if check_only:
        sys.exit(_check_committed(results, output_dir))
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for result in results:
        for name, content in result.files.items():
            target = output_dir / name
            target.write_text(content, encoding="utf-8")
            written.append(str(target))
    if output_format == "json":
        return
    for path in written:
        click.echo(f"wrote {path}", err=True)


def _check_committed(results: list[Compilation], output_dir: Path) -> int:
    """`compile --check`: 0 when every module in `output_dir` is exactly what its `.agent`
    file compiles to now, else 1 with one line per module that is missing or stale."""
    problems = []
    for result in results:
        for name, expected in result.files.items():
            target = output_dir / name
            try:
                committed = target.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"missing: {target} ({type(exc).__name__}) for {result.path}")
                continue
            if committed != expected:
                problems.append(f"stale: {target} {_staleness(committed, expected, result.path)}")
    for line in problems:
        click.echo(line, err=True)
    if problems:
        click.echo("run `twelvefold compile` again and commit the result", err=True)
        return 1
    count = sum(len(r.files) for r in results)
    click.echo(f"ok: {count} module{'s' if count != 1 else ''} up to date", err=True)
    return 0


def _staleness(committed: str, expected: str, source: str) -> str:
    """Why a committed module differs: its `AGENT` disagrees with the source (an edit to the
    module, or to the .agent file since), or only its code or layout does."""
    if _agent_assignment(committed) != _agent_assignment(expected):
        return f"(its AGENT disagrees with {source})"
    return f"(differs from what {source} compiles to)"


def _agent_assignment(module: str) -> str | None:
    try:
        tree = ast.parse(module)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["AGENT"]:
            return ast.dump(node.value)
    return None
