"""`twelvefold check` and `twelvefold compile`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

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
PROMPTS = click.option(
    "--prompts",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder that prompt paths resolve under (default: the nearest prompts/).",
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
@PROMPTS
@FORMAT
def compile_(
    files: tuple[Path, ...], output_dir: Path, prompts: Path | None, output_format: str
) -> None:
    """Compile agents to plain Python reducer modules, one per agent."""
    results = _compile_all(files, prompts, generate_code=True)
    code = _report(results, output_format)
    if code != 0:
        sys.exit(code)
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
