"""`twelvefold check` and `twelvefold compile`."""

from __future__ import annotations

import ast
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import click

from twelvefold.commands.options import FOLDER_HINT, PROMPTS, GivenPath
from twelvefold.compiler import Compilation, compile_file
from twelvefold.compiler.codegen import FormatterUnavailable
from twelvefold.compiler.diagnostics import render_all, summary
from twelvefold.runtime.terminal import one_line


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
    """A problem that is not the compiler's (usage, an unwritable folder) in the shape of a
    diagnostic's JSON (`Diagnostic.to_json`)."""
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


def _fail(message: str, output_format: str, path: str = "") -> NoReturn:
    """Exit 1 with one line, or one JSON document with `--format json`."""
    if output_format == "json":
        click.echo(json.dumps([_usage_diagnostic(message, path)], indent=2))
    else:
        click.echo(f"error: {one_line(message)}", err=True)
    sys.exit(1)


def _check_config(files: tuple[Path, ...], output_format: str) -> None:
    """Exit 1 naming the file (and, for TOML syntax, the line) when the configuration that
    applies to one of `files` cannot be read or has the wrong shape: the compiler would
    otherwise check the agent as if there were none, and the runtime refuse it later."""
    from twelvefold.runtime.config import ConfigError, find_config

    for path in files:
        try:
            config = find_config(path)
            config.approvers  # noqa: B018 - reading them validates their shape
            config.allow_stdlib  # noqa: B018
        except ConfigError as exc:
            # The message holds a folder name, which can hold terminal escapes: printed
            # escaped, never raw (the JSON document carries it as it is).
            message = str(exc)
            shown = message if message.isprintable() else ascii(message)[1:-1]
            _fail(
                shown if output_format == "text" else message,
                output_format,
                message.partition(": ")[0],
            )


def _compile_all(
    files: tuple[Path, ...],
    prompts: Path | None,
    generate_code: bool,
    output_format: str,
    output_dir: Path | None = None,
) -> list[Compilation]:
    """With `output_dir`, each module records where its templates are relative to it."""
    _check_config(files, output_format)
    try:
        return [
            compile_file(f, prompts_dir=prompts, generate_code=generate_code, module_dir=output_dir)
            for f in files
        ]
    except FormatterUnavailable as exc:
        _fail(str(exc), output_format)


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


FILES = click.argument("files", nargs=-1, required=True, type=GivenPath(named="FILE"))
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
@click.option(
    "--explain-approvals",
    is_flag=True,
    help="Also list, per tool that requires approval, the values that decide it and where "
    "each comes from (a model, a tool, a person).",
)
def check(
    files: tuple[Path, ...], prompts: Path | None, output_format: str, explain_approvals: bool
) -> None:
    """Parse and check agents; print diagnostics. Exit 1 when there are errors."""
    results = _compile_all(files, prompts, generate_code=False, output_format=output_format)
    if explain_approvals and output_format == "json":
        code = _report(results, output_format, _explanations_json(results))
    else:
        code = _report(results, output_format)
    if explain_approvals and output_format == "text":
        _explain(results)
    if code == 0 and output_format == "text":
        click.echo(f"ok: {len(files)} file{'s' if len(files) != 1 else ''} checked", err=True)
    sys.exit(code)


def _explain(results: list[Compilation]) -> None:
    """The approvals' deciding values on stdout (compiler/checks/origins.py)."""
    from twelvefold.compiler.checks.origins import explain_approvals

    for result in results:
        if result.program is not None:
            text = explain_approvals(result.program) or f"{result.path}: no tool requires approval"
            # Names and the file's path are the user's: each printed line stays one line.
            click.echo("\n".join(one_line(line) for line in text.split("\n")))


def _explanations_json(results: list[Compilation]) -> list[dict[str, object]]:
    """The deciding values as JSON entries beside the diagnostics (`"severity": "info"`,
    code `explain-approvals`), one per value."""
    from twelvefold.compiler.checks.origins import deciding_values

    entries: list[dict[str, object]] = []
    for result in results:
        if result.program is None:
            continue
        for value in deciding_values(result.program):
            span = value.guard.span
            entries.append(
                {
                    "severity": "info",
                    "code": "explain-approvals",
                    "message": f"`{value.field}` in {value.where} decides the approval of "
                    + ", ".join(f"`{tool}`" for tool in value.tools),
                    "path": result.path,
                    "line": span.line,
                    "column": span.column,
                    "end_line": span.end_line,
                    "end_column": span.end_column,
                    "tools": list(value.tools),
                    "field": value.field,
                    "origins": [{"kind": o.kind, "step": o.step} for o in value.origins],
                    "restates": list(value.restates),
                    "acknowledged": value.acknowledged,
                }
            )
    return entries


@click.command("compile", cls=_DiagnosingCommand)
@FILES
@click.option(
    "-o",
    "--output",
    "output_dir",
    type=GivenPath(file_okay=False, hint=FOLDER_HINT),
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
    results = _compile_all(
        files, prompts, generate_code=True, output_format=output_format, output_dir=output_dir
    )
    if not all(r.ok for r in results):
        sys.exit(_report(results, output_format))
    clash = _clash(results)
    if check_only and clash is None:
        _report(results, output_format)
        sys.exit(_check_committed(results, output_dir))
    written, problem = ([], clash) if clash is not None else _write(results, output_dir)
    if output_format == "json":
        extra = [_usage_diagnostic(problem, str(output_dir))] if problem else []
        _report(results, output_format, extra)
    else:
        _report(results, output_format)
        if problem:
            click.echo(f"error: {one_line(problem)}", err=True)
        for path in written:
            click.echo(f"wrote {one_line(path)}", err=True)
    sys.exit(1 if problem else 0)


def _clash(results: list[Compilation]) -> str | None:
    """What stops the modules from being written side by side: two `.agent` files (or
    two agents) whose modules take one file name, the second of which would silently
    replace the first (`agent json` is `json_agent.py`, as is `agent json_agent`).
    Names are compared case-folded: `Json.py` and `json.py` are one file on macOS's and
    Windows' file systems. The same file given twice is one."""
    owners: dict[str, tuple[str, str]] = {}
    for result in results:
        for name in result.files:
            here = (name, result.path)
            first = owners.setdefault(name.casefold(), here)
            if first != here and Path(first[1]).resolve() != Path(result.path).resolve():
                return (
                    f"{one_line(result.path)} and {one_line(first[1])} both compile to "
                    f"{one_line(first[0])}: rename one of the agents (its module is named "
                    "after it), or compile them into different -o folders"
                )
    return None


def _write(results: list[Compilation], output_dir: Path) -> tuple[list[str], str | None]:
    """Write the generated modules; the paths written, and what stopped the writing."""
    from twelvefold.runtime.localfiles import replace_file
    from twelvefold.runtime.tools import is_generated_module

    written: list[str] = []
    for result in results:  # nothing written unless every file may be
        for name in result.files:
            target = output_dir / name
            if target.is_symlink():
                return written, f"{target} is a link: remove it (compile writes no link's target)"
            if target.exists() and not is_generated_module(target):
                return written, (
                    f"{target} is not a module twelvefold generated (its first line is not "
                    "the generated header): move it away, or compile into another -o folder"
                )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for result in results:
            for name, content in result.files.items():
                target = output_dir / name
                # Whole or not at all: a write cut short (a full disk, a kill) leaves the
                # module before it, never the start of a new one.
                replace_file(target, content.encode("utf-8"))
                written.append(str(target))
    except OSError as exc:
        return written, f"cannot write to {output_dir}: {exc.strerror or exc}"
    return written, None


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
                problems.append(
                    f"missing: {one_line(str(target))} ({type(exc).__name__}) "
                    f"for {one_line(result.path)}"
                )
                continue
            if committed != expected:
                why = _staleness(committed, expected, one_line(result.path))
                problems.append(f"stale: {one_line(str(target))} {why}")
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
