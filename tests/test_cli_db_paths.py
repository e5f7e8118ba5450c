"""Every command that takes `--db`, given a path the system refuses, says so in one line.

Found by a red team: `token list`, `token revoke` and `expire` printed a traceback for a
`--db` with a component over 255 characters (`File name too long`), while `run`, `show`
and the rest printed `error: cannot use PATH: File name too long`. The commands are
enumerated from the click group, so a command added later is covered without a line here;
`ARGUMENTS` only says what to give its required parameters (a parameter it does not know
fails the test, naming it) and `REACHES_THE_STORE` what makes a command open its store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tests.runtime_helpers import EXAMPLES
from twelvefold.cli import cli

AGENT = str(EXAMPLES / "deploybot.agent")

ARGUMENTS: dict[str, list[str]] = {
    "agent": [AGENT],
    "agents": [AGENT],
    "files": [AGENT],
    "agent_ref": [AGENT],
    "places": [AGENT],
    "words": [AGENT],
    "step": ["decide"],
    "thread": ["t0"],
    "token_id": ["abc"],
    "person": ["ana"],
    "type_name": ["GitTags"],
    "value": ['{"tags": []}'],
}
"""A value for each required argument, by its name."""

OPTIONS: dict[str, list[str]] = {
    "input_text": ["--input", "deploy v1"],
    "reason": ["--reason", "done"],
    "at_event": ["--at", "1"],
    "store_url": ["--store", "postgresql://nobody@127.0.0.1:1/none"],  # `worker`'s
}
"""Each required option, with a value, by its name."""

REACHES_THE_STORE: dict[tuple[str, ...], list[str]] = {
    ("graph",): ["--thread", "t0"],
    ("prompt",): ["--thread", "t0"],
    ("prune",): ["--older-than", "1d", "--delete"],
    ("serve",): ["--port", "0"],  # binds before it opens the store: not one that is taken
}
"""What a command needs besides its required parameters before it opens its store."""


def _commands(
    group: click.Group = cli, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command of the CLI (a group's subcommands each), with the words naming it."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def _commands_taking_db() -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for words, command in _commands():
        if any(param.name == "db" for param in command.params):
            yield words, command


COMMANDS = sorted(_commands_taking_db(), key=lambda found: found[0])


def _args(
    words: tuple[str, ...], command: click.Command, db: str, *, reach: bool = True
) -> list[str]:
    args = [*words]
    for param in command.params:
        if not param.required:
            continue
        known = ARGUMENTS if isinstance(param, click.Argument) else OPTIONS
        assert param.name in known, f"say what `{' '.join(words)}` gets for {param.name}"
        args += known[param.name]
    db_option = ["--db", db] if any(param.name == "db" for param in command.params) else []
    return [*args, *(REACHES_THE_STORE.get(words, []) if reach else []), *db_option]


def test_the_commands_are_found() -> None:
    found = {words for words, _ in COMMANDS}
    assert {("run",), ("token", "list"), ("token", "revoke"), ("expire",)} <= found


def _refused(tmp_path: Path, case: str) -> tuple[str, str]:
    """A `--db` where no store can be, and the end of the line that says why."""
    if case == "too long":
        return str(tmp_path / ("a" * 300) / "threads.db"), "File name too long"
    if case == "a loop of links":
        (tmp_path / "one").symlink_to(tmp_path / "two")
        (tmp_path / "two").symlink_to(tmp_path / "one")
        return str(tmp_path / "one"), "Too many levels of symbolic links"
    if case == "empty":  # was read as the current folder ("Is a directory")
        return "", "--db is empty: give the path of a file"
    if case == "a folder":  # found by a red team: click's four-line usage error, exit 2
        (tmp_path / "folder").mkdir()
        return str(tmp_path / "folder"), "Is a directory"
    (tmp_path / "afile").write_text("")
    return str(tmp_path / "afile" / "threads.db"), "Not a directory"


@pytest.mark.parametrize(
    "case", ["too long", "under a file", "a loop of links", "empty", "a folder"]
)
@pytest.mark.parametrize(
    ("words", "command"), COMMANDS, ids=[" ".join(words) for words, _ in COMMANDS]
)
def test_a_db_path_the_system_refuses_is_one_error_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    words: tuple[str, ...],
    command: click.Command,
    case: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # no configuration, and whatever is made is made here
    db, why = _refused(tmp_path, case)
    result = CliRunner().invoke(cli, _args(words, command, db))
    assert "Traceback" not in result.output, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert lines[0].endswith(why) and len(lines[0]) < 300, lines[0]
    assert result.exit_code == 1, result.output
    if any(param.name == "as_json" for param in command.params):
        # With --json, stdout is one document too: the error, as every command gives it.
        result = CliRunner().invoke(cli, [*_args(words, command, db), "--json"])
        assert result.exit_code == 1, result.output
        assert json.loads(result.stdout)["error"]["message"] == lines[0].removeprefix("error: ")


def test_a_device_or_a_fifo_as_the_store_is_refused_and_nothing_is_written_beside_it(
    tmp_path: Path,
) -> None:
    """Found by a red team: `--db /dev/null` had SQLite open the device and leave a
    world-writable `/dev/null-journal`; a FIFO gave `disk I/O error` or "no thread store"."""
    import os

    fifo = tmp_path / "fifo.db"
    os.mkfifo(fifo)
    link = tmp_path / "null.db"
    link.symlink_to(os.devnull)
    for path in (fifo, link):
        for command in (["threads"], ["token", "create", "ana", "--create"]):
            done = CliRunner().invoke(cli, [*command, "--db", str(path)])
            assert done.exit_code == 1, (command, done.output)
            assert "not a regular file" in done.output, (command, done.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.db", "null.db"]


FILE_OPTIONS = ("record", "events", "cassette")
"""The options naming a local file a command reads or appends to."""


def _commands_taking_files() -> Iterator[tuple[tuple[str, ...], click.Command, str]]:
    for words, command in _commands():
        for param in command.params:
            if param.name in FILE_OPTIONS or param.name == "events_file":
                yield words, command, param.opts[0]


FILE_COMMANDS = sorted(_commands_taking_files(), key=lambda found: (*found[:1], found[2]))


def test_the_file_options_are_found() -> None:
    found = {(words, option) for words, _, option in FILE_COMMANDS}
    assert {(("run",), "--record"), (("run",), "--cassette"), (("graph",), "--events")} <= found


@pytest.mark.parametrize(
    ("words", "command", "option"),
    FILE_COMMANDS,
    ids=[f"{' '.join(words)} {option}" for words, _, option in FILE_COMMANDS],
)
def test_a_folder_as_a_file_option_is_one_error_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    words: tuple[str, ...],
    command: click.Command,
    option: str,
) -> None:
    """Found by a red team: a folder given as `--record`, `--events` or `--cassette` was
    click's four-line usage error (exit 2), where every other path the command cannot use
    is one line and exit 1."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    db = str(tmp_path / "threads.db")
    args = _args(words, command, db, reach=False)
    result = CliRunner().invoke(cli, [*args, option, str(tmp_path / "folder")])
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert lines == [f"error: cannot use {tmp_path / 'folder'}: Is a directory"], result.stderr


READ_OPTIONS = [found for found in FILE_COMMANDS if found[2] != "--record"]
"""The file options a command only reads (`--record` makes its file when it is missing)."""


@pytest.mark.parametrize(
    ("words", "command", "option"),
    READ_OPTIONS,
    ids=[f"{' '.join(words)} {option}" for words, _, option in READ_OPTIONS],
)
def test_a_missing_file_for_a_file_option_is_one_error_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    words: tuple[str, ...],
    command: click.Command,
    option: str,
) -> None:
    """Found by a red team: a `--cassette` or `--events` that does not exist was click's
    usage error (exit 2) where every other path a command cannot use is one line, exit 1
    (docs/runtime.md: exit 1 for a problem with the input, 2 for a mistaken command)."""
    monkeypatch.chdir(tmp_path)
    args = _args(words, command, str(tmp_path / "threads.db"), reach=False)
    result = CliRunner().invoke(cli, [*args, option, str(tmp_path / "gone.json")])
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        f"error: cannot use {tmp_path / 'gone.json'}: No such file or directory"
    ], result.stderr


@pytest.mark.parametrize("words", [["check"], ["compile", "-o", "out"], ["graph"], ["test"]])
@pytest.mark.parametrize("case", ["no such file", "a folder"])
def test_an_agent_file_that_cannot_be_read_is_a_problem_not_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, words: list[str], case: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.agent").mkdir()
    given = "gone.agent" if case == "no such file" else "folder.agent"
    result = CliRunner().invoke(cli, [*words, given])
    assert "Traceback" not in result.output and "Usage:" not in result.output, result.output
    assert result.exit_code == 1, result.output
    assert given in result.stderr
    assert "--seed" not in result.stderr, "no generated thread failed"


def _commands_taking_folders() -> Iterator[tuple[tuple[str, ...], str]]:
    for words, command in _commands():
        for param in command.params:
            if param.name in ("prompts", "paths") and not getattr(param, "is_flag", False):
                yield words, param.opts[0]


FOLDER_OPTIONS = sorted(_commands_taking_folders())


@pytest.mark.parametrize(
    ("words", "option"), FOLDER_OPTIONS, ids=[" ".join(w) + f" {o}" for w, o in FOLDER_OPTIONS]
)
@pytest.mark.parametrize("case", ["no such folder", "not a folder", "File name too long"])
def test_a_folder_option_naming_no_folder_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, words: tuple[str, ...], option: str, case: str
) -> None:
    """A red team: `--prompts` or `--path` naming no folder was click's usage error
    (exit 2), where every other path a command cannot use is one line and exit 1."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    given = tmp_path / {"no such folder": "gone", "not a folder": "file"}.get(case, "d" * 300)
    result = CliRunner().invoke(cli, [*words, option, str(given), "x.agent"])
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [f"error: {option} {given}: {case}"], result.stderr


def test_a_folder_option_naming_no_folder_gives_the_error_object_with_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["run", "x.agent", "--json", "--input", "x", "--prompts", str(tmp_path / "gone")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    error = json.loads(result.stdout)["error"]
    assert error["message"] == f"--prompts {tmp_path / 'gone'}: no such folder"


def _names_a_path(param: click.Parameter) -> bool:
    """Whether `param` takes a path: its type is click's, or what `--help` calls it
    says so (a .agent file, a generated module or a folder, kept as text)."""
    if isinstance(param.type, click.Path):
        return True
    shown = param.human_readable_name if isinstance(param, click.Argument) else param.metavar
    return any(word in (shown or "").upper() for word in ("PATH", "FILE", "DIR", "AGENT"))


def _path_parameters() -> Iterator[tuple[tuple[str, ...], click.Command, click.Parameter]]:
    for words, command in _commands():
        for param in command.params:
            if _names_a_path(param):
                yield words, command, param


PATH_PARAMETERS = sorted(_path_parameters(), key=lambda found: (found[0], str(found[2].name)))


def test_the_path_parameters_are_found() -> None:
    found = {(words, param.name) for words, _, param in PATH_PARAMETERS}
    assert {
        (("run",), "agent"), (("run",), "prompts"), (("run",), "paths"), (("run",), "db"),
        (("run",), "record"), (("run",), "cassette"), (("graph",), "events_file"),
        (("graph",), "agent"), (("graph",), "output"), (("compile",), "output_dir"),
        (("check",), "files"), (("serve",), "places"), (("worker",), "places"),
        (("prompt",), "agent_ref"), (("migrate",), "words"), (("show",), "agent"),
        (("expire",), "agents"), (("prune",), "archive"), (("test",), "source"),
        (("test",), "agents"), (("token", "create"), "db"),
    } <= found  # fmt: skip


@pytest.mark.parametrize(
    ("words", "command", "param"),
    PATH_PARAMETERS,
    ids=[f"{' '.join(words)} {param.name}" for words, _, param in PATH_PARAMETERS],
)
def test_an_empty_path_is_refused_in_one_line_not_read_as_the_current_folder(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    words: tuple[str, ...],
    command: click.Command,
    param: click.Parameter,
) -> None:
    """Found by a red team: `--prompts ""` and `--path ""` were taken as the current
    folder (`Path("")` is `.`), `run ""` was a traceback, `--db ""` was "Is a directory".
    An empty path is refused, naming the parameter, wherever a command takes one: a
    script whose variable was unset does not run on whatever folder it is in."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TWELVEFOLD_DB", raising=False)
    monkeypatch.delenv("TWELVEFOLD_STORE", raising=False)
    args = _args(words, command, str(tmp_path / "threads.db"), reach=False)
    if param.name == "db":
        args[args.index("--db") + 1] = ""
    elif isinstance(param, click.Argument):  # its value, given by `_args`, made empty
        start = len(words) + sum(
            len((ARGUMENTS if isinstance(p, click.Argument) else OPTIONS)[p.name or ""])
            for p in command.params[: command.params.index(param)]
            if p.required
        )
        assert args[start] == ARGUMENTS[param.name or ""][0], args
        args[start] = ""
    else:
        args += [max(param.opts, key=len), ""]
    result = CliRunner().invoke(cli, args)
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)
    assert " is empty: give " in lines[0], (args, lines)
    assert result.exit_code == 1, (args, result.output)
    assert list(tmp_path.iterdir()) == [], "nothing is made for a refused command"
    if any(p.name == "as_json" for p in command.params):
        result = CliRunner().invoke(cli, [*args, "--json"])
        assert result.exit_code == 1, result.output
        error = json.loads(result.stdout)["error"]
        assert error == {"type": "EmptyPath", "message": lines[0].removeprefix("error: ")}
