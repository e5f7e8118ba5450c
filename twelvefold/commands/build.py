"""`twelvefold check` and `twelvefold compile`."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from twelvefold.compiler import Compilation, compile_file
from twelvefold.compiler.diagnostics import render_all, summary


class _DiagnosingCommand(click.Command):
    """A command whose usage errors (a missing file, an unknown option) are a JSON document
    on stdout too when `--format json` was asked for, so a tool reading stdout always gets
    one; the exit code stays 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        wants_json = _asks_for_json(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if not wants_json:
                raise
            shown = _usage_diagnostic(exc.format_message(), help=f"see `{ctx.command_path} --help`")
            click.echo(json.dumps([shown], indent=2))
            ctx.exit(exc.exit_code)


def _asks_for_json(args: list[str]) -> bool:
    return any(
        arg == "--format=json" or (arg == "--format" and following == "json")
        for arg, following in itertools.pairwise([*args, ""])
    )


def _usage_diagnostic(message: str, path: str = "", help: str = "") -> dict[str, object]:
    """A usage error in the shape of a diagnostic's JSON (`Diagnostic.to_json`)."""
    return {
        "severity": "error",
        "code": "usage",
        "message": message,
        "path": path,
        "line": 0,
        "column": 0,
        "end_line": 0,
        "end_column": 0,
        "label": "",
        "help": help,
        "notes": [],
    }


def _compile_all(
    files: tuple[Path, ...], prompts: Path | None, generate_code: bool
) -> list[Compilation]:
    return [compile_file(f, prompts_dir=prompts, generate_code=generate_code) for f in files]


def _report(
    results: list[Compilation], output_format: str, extra: Sequence[dict[str, object]] = ()
) -> int:
    """Print the diagnostics (JSON: one document on stdout, with `extra` problems that are
    not the compiler's); 0 when no file has errors."""
    diagnostics = [d for r in results for d in r.diagnostics]
    if output_format == "json":
        click.echo(json.dumps([*(d.to_json() for d in diagnostics), *extra], indent=2))
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


@click.command(cls=_DiagnosingCommand)
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


@click.command("compile", cls=_DiagnosingCommand)
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
    if not all(r.ok for r in results):
        sys.exit(_report(results, output_format))
    written, problem = _write(results, output_dir)
    if output_format == "json":
        extra = [_usage_diagnostic(problem, str(output_dir))] if problem else []
        _report(results, output_format, extra)
    else:
        _report(results, output_format)
        if problem:
            click.echo(f"error: {problem}", err=True)
        for path in written:
            click.echo(f"wrote {path}", err=True)
    sys.exit(1 if problem else 0)


def _write(results: list[Compilation], output_dir: Path) -> tuple[list[str], str | None]:
    """Write the generated modules; the paths written, and what stopped the writing."""
    written: list[str] = []
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for result in results:
            for name, content in result.files.items():
                target = output_dir / name
                target.write_text(content, encoding="utf-8")
                written.append(str(target))
    except OSError as exc:
        return written, f"cannot write to {output_dir}: {exc.strerror or exc}"
    return written, None


def register(cli: click.Group) -> None:
    cli.add_command(check)
    cli.add_command(compile_)
