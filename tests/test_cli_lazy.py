"""The CLI loads a command's module only when that command runs (issue 9 §1).

`twelvefold --help` lists every command from `LAZY_COMMANDS` without importing any of them;
these tests keep that table true to the commands it names, and show that `--help` and
`--version` import neither the compiler, the runtime nor their heavy dependencies. Start-up
time itself is measured in `make bench` (benchmarks/startup.py), never asserted here.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from twelvefold import commands
from twelvefold.cli import cli
from twelvefold.commands import LAZY_COMMANDS

HEAVY = (
    "twelvefold.compiler",
    "twelvefold.runtime",
    "twelvefold.testing",
    "hypothesis",
    "jinja2",
    "networkx",
    "pydantic",
    "lark",
    "openai",
    "instructor",
    "psycopg",
)


def _defined_commands() -> dict[str, tuple[str, str, click.Command]]:
    """Every click command defined at the top of a module in twelvefold/commands/."""
    found: dict[str, tuple[str, str, click.Command]] = {}
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        nested = {  # `token create` is a subcommand of `token`, not a command of its own
            id(child)
            for group in vars(module).values()
            if isinstance(group, click.Group)
            for child in group.commands.values()
        }
        for attribute, value in vars(module).items():
            if (
                isinstance(value, click.Command)
                and value.name is not None
                and id(value) not in nested
            ):
                found[value.name] = (info.name, attribute, value)
    return found


def test_every_command_is_listed_where_it_is_defined_with_its_own_summary() -> None:
    defined = _defined_commands()
    assert set(LAZY_COMMANDS) == set(defined), "add new commands to LAZY_COMMANDS"
    for name, entry in LAZY_COMMANDS.items():
        module, attribute, command = defined[name]
        assert (entry.module, entry.attribute) == (module, attribute), name
        assert entry.summary == command.get_short_help_str(limit=10_000), name


def test_help_lists_every_command_with_its_summary() -> None:
    result = CliRunner().invoke(cli, ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    listed = result.output.split("Commands:", 1)[1]
    for name, entry in LAZY_COMMANDS.items():
        assert f"  {name}" in listed and entry.summary in listed, name


def test_a_command_loaded_lazily_still_runs_and_has_its_own_help() -> None:
    result = CliRunner().invoke(cli, ["check", "-h"])
    assert result.exit_code == 0 and "--format" in result.output, result.output
    result = CliRunner().invoke(cli, ["nosuch"])
    assert result.exit_code == 2 and "No such command" in result.output


_LOADED = """
import json, sys
from twelvefold.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_nothing_heavy(flag: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LOADED, flag], capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stderr.strip().splitlines()[-1])
    heavy = [m for m in loaded if m.startswith(HEAVY)]
    assert heavy == [], f"{flag} imports {heavy[:8]}"
    assert "Usage" in result.stdout or "version" in result.stdout


def test_the_pytest_plugin_imports_nothing_heavy_until_an_agent_file_is_collected() -> None:
    # pytest loads the plugin in every project of the environment (the pytest11 entry point).
    probe = "import json, sys, twelvefold.testing.plugin\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    itself = {"twelvefold.testing", "twelvefold.testing.plugin"}
    heavy = [m for m in json.loads(result.stdout) if m.startswith(HEAVY) and m not in itself]
    assert heavy == [], f"the plugin imports {heavy[:8]}"


def test_every_db_option_is_the_shared_one() -> None:
    # One default and one environment variable for every command that opens the store. The
    # default is applied after --store and the configuration's `store` (options.store_path),
    # so the option itself has none; its help names it.
    from twelvefold.commands.options import DEFAULT_DB

    UNSET = getattr(click.core, "UNSET", None)  # click 8.3 says "no default" with a sentinel
    for name, (_, _, command) in _defined_commands().items():
        for param in command.params:
            if param.name == "db":
                assert isinstance(param, click.Option)
                assert param.envvar == "TWELVEFOLD_DB", name
                assert param.get_default(click.Context(command)) in (None, UNSET), name
                assert str(DEFAULT_DB) in (param.help or ""), name


@pytest.mark.parametrize("folder", ["compiler", "runtime", "grammar"])
def test_the_repositorys_folders_are_never_importable_under_a_second_name(folder: str) -> None:
    # From the checkout's root `compiler/` is on sys.path as a bare name; it is
    # twelvefold.compiler and nothing else (else two copies of every class could meet).
    root = Path(commands.__file__).resolve().parents[2]
    probe = f"import twelvefold.{folder}\nimport {folder}\n"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert f"ImportError: import twelvefold.{folder}, not {folder}" in result.stderr


def test_a_sqlite_store_never_imports_psycopg(tmp_path: Path) -> None:
    # psycopg is imported when a postgresql:// store is opened, and only then.
    probe = (
        "import sys\n"
        "from twelvefold.cli import cli\n"
        "try:\n"
        "    cli.main(['threads', '--db', sys.argv[1]], standalone_mode=False)\n"
        "finally:\n"
        "    print(sorted(m for m in sys.modules if m.startswith('psycopg')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "none.db")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr
