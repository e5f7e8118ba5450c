"""A refusal about the store names the option or variable the user named it with, and a
command it tells the user to run carries that store (a red team, rt9: `token create carol
--store sqlite:///threads.db` said `check --db and TWELVEFOLD_DB`; the worker said `run
twelvefold db upgrade` with no `--store`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from twelvefold.cli import cli


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TWELVEFOLD_DB", raising=False)
    monkeypatch.delenv("TWELVEFOLD_STORE", raising=False)
    return tmp_path


def refusal(args: list[str], env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    return line


COMMANDS = [
    ["token", "create", "carol"],
    ["token", "list"],
    ["token", "revoke", "abc"],
    ["show", "th-1"],
    ["threads", "--json"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_store_named_by_store_is_checked_by_that_name(workdir: Path, command: list[str]) -> None:
    line = refusal([*command, "--store", "sqlite:///threads.db"])
    assert "--store and TWELVEFOLD_STORE" in line and "TWELVEFOLD_DB" not in line, line
    line = refusal(command, env={"TWELVEFOLD_STORE": "sqlite:///threads.db"})
    assert "--store and TWELVEFOLD_STORE" in line and "TWELVEFOLD_DB" not in line, line


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_store_named_by_db_is_checked_by_that_name(workdir: Path, command: list[str]) -> None:
    line = refusal([*command, "--db", "threads.db"])
    assert "--db and TWELVEFOLD_DB" in line and "TWELVEFOLD_STORE" not in line, line


def test_a_store_named_by_the_configuration_is_checked_there(workdir: Path) -> None:
    (workdir / "twelvefold.toml").write_text('store = "sqlite:///data/threads.db"\n')
    line = refusal(["token", "list"])
    assert f"`store` in {workdir / 'twelvefold.toml'}" in line, line
    assert "TWELVEFOLD_DB" not in line


def test_the_json_error_says_the_same(workdir: Path) -> None:
    result = CliRunner().invoke(cli, ["threads", "--json", "--store", "sqlite:///t.db"])
    assert "--store and TWELVEFOLD_STORE" in json.loads(result.stdout)["error"]["message"]


def test_a_worker_names_db_upgrade_with_its_store_and_no_password(postgres_url: str) -> None:
    from tests.test_worker import worker_cli

    with_password = postgres_url.replace("://", "://someone:s3cret@", 1)
    if "@" in postgres_url:  # the cluster's URL names its user already: give it a password
        user = postgres_url.split("://", 1)[1].split("@", 1)[0]
        with_password = postgres_url.replace(f"{user}@", f"{user}:s3cret@", 1)
    done = worker_cli("--store", with_password)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "run `twelvefold db upgrade --store postgresql://" in line, line
    assert "s3cret" not in done.stderr


def test_db_on_the_command_line_beats_the_store_variable(workdir: Path) -> None:
    """rt17: with TWELVEFOLD_STORE set, a `--db` given on the command line was ignored
    (the variable won), while every hint printed repeated `--db`: the hint and the command
    named different stores. The command line wins, as it does for every other option."""
    runner = CliRunner()
    made = runner.invoke(cli, ["token", "create", "carol", "--db", "mine.db", "--create"])
    assert made.exit_code == 0, made.output
    elsewhere = {"TWELVEFOLD_STORE": f"sqlite:///{workdir / 'other.db'}"}
    listed = runner.invoke(cli, ["token", "list", "--db", "mine.db"], env=elsewhere)
    assert listed.exit_code == 0, listed.output
    assert "carol" in listed.stdout
    assert not (workdir / "other.db").exists()
    # Both variables: `--store`'s wins, as docs/stores.md says.
    both = {**elsewhere, "TWELVEFOLD_DB": "mine.db"}
    line = refusal(["token", "list"], env=both)
    assert "--store and TWELVEFOLD_STORE" in line, line


def test_db_and_store_both_on_the_command_line_is_a_usage_error(workdir: Path) -> None:
    result = CliRunner().invoke(
        cli, ["threads", "--db", "mine.db", "--store", "sqlite:///other.db"]
    )
    assert result.exit_code == 2, result.output
    assert "give --db or --store, not both" in result.stderr
    assert not (workdir / "mine.db").exists() and not (workdir / "other.db").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--db", "postgresql://agents:S3cretpw@127.0.0.1:1/tf"],
        ["--store", "postgresql:/agents:S3cretpw@127.0.0.1:1/tf"],  # a slash missed
        ["--db", "host=127.0.0.1 password=S3cretpw"],
        # rt20: after a blank or a quote (an env file's `VAR= value`, Docker's quotes)
        ["--db", " postgres://bob:S3cretpw@h/db"],
        ["--db", '"postgres://bob:S3cretpw@h/db"'],
        # rt21: a no-break space or a figure space first
        ["--db", "\u00a0postgres://bob:S3cretpw@h/db"],
        ["--db", "\u2007postgres://bob:S3cretpw@h/db"],
        # rt20: a scheme twelvefold does not know, a blank in the password
        ["--store", "postgresql+psycopg://bob:sec S3cretpw@host/db"],
        ["--store", "postgresq://bob:x@host/db?password=top S3cretpw"],
        # rt21: look-alikes of a URL: no scheme, percent-encoded, full-width
        ["--db", "bob:S3cretpw@h/db"],
        ["--db", "bob:S3cretpw@h:5432/db"],
        ["--db", "postgresql%3A%2F%2Fbob:S3cretpw@h/db"],
        ["--db", "postgresql\uff1a//bob:S3cretpw@h/db"],
        ["--db", "postgresql:\uff0f\uff0fbob:S3cretpw@h/db"],
    ],
    ids=[
        "url as --db",
        "one slash",
        "keywords as --db",
        "blank first",
        "quoted",
        "no-break space first",
        "figure space first",
        "unknown scheme",
        "unknown scheme, query",
        "no scheme",
        "no scheme, a port",
        "percent-encoded",
        "full-width colon",
        "full-width slashes",
    ],
)
def test_a_database_url_given_as_a_file_is_refused_unshown(workdir: Path, args: list[str]) -> None:
    """rt18: a PostgreSQL URL given to `--db` (or `TWELVEFOLD_DB`), or with one slash,
    was a SQLite path: `run` made the folder `postgresql:/agents:S3cretpw@…/` and stored
    the thread there, the password printed in every line about it."""
    for command in (["threads"], ["token", "list"]):
        result = CliRunner().invoke(cli, [*command, *args])
        assert result.exit_code == 1, result.output
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and "S3cretpw" not in result.output, result.output
    named = {"TWELVEFOLD_DB": args[1]}
    result = CliRunner().invoke(cli, ["threads"], env=named)
    assert result.exit_code == 1 and "S3cretpw" not in result.output, result.output
    assert list(workdir.iterdir()) == []


def test_a_hint_carries_no_secret_parameter() -> None:
    """rt18: `sslpassword=` (the client key's passphrase) was hidden in `stored in` but
    printed whole in the `resume:` hint."""
    from twelvefold.runtime.store import shown_url, url_without_password

    url = "postgresql://ana:pw1@h/tf?sslpassword=KEYPASS&sslmode=disable&PassWord=pw2"
    assert url_without_password(url) == "postgresql://ana@h/tf?sslmode=disable"
    assert "KEYPASS" not in shown_url(url) and "pw2" not in shown_url(url)


def test_a_path_with_a_colon_inside_is_still_a_file(workdir: Path) -> None:
    """The URL check refuses `scheme:/` at the start or after a blank or quote, not a
    colon inside a path (`runs/a:b.db`, a folder `x:` of an absolute path)."""
    for path in [
        "runs/a:b.db",
        str(workdir / "x:" / "y" / "t.db"),
        "runs/a@b.db",
        "me@host.db",  # an `@` without a `:` before it is no password
        str(workdir / "a:b@c" / "t.db"),  # given by its absolute path
    ]:
        result = CliRunner().invoke(cli, ["threads", "--db", path])
        assert result.exit_code == 1, result.output
        assert "no thread store at" in result.stderr and "looks like a URL" not in result.stderr
