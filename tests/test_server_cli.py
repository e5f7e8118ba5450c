"""`twelvefold token` and `serve`'s refusals, and `--store URL` wherever `--db` is taken."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import EXAMPLES, write_cassette
from twelvefold.cli import cli
from twelvefold.runtime.store import StoreError, store_file
from twelvefold.server.tokens import TokenStore


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TWELVEFOLD_DB", raising=False)
    monkeypatch.delenv("TWELVEFOLD_STORE", raising=False)
    return tmp_path


def test_store_urls_are_sqlalchemy_style() -> None:
    assert store_file("sqlite:///threads.db") == Path("threads.db")
    assert store_file("sqlite:///data/t.db") == Path("data/t.db")
    assert store_file("sqlite:////var/t.db") == Path("/var/t.db")
    assert store_file("plain/t.db") == Path("plain/t.db")
    with pytest.raises(StoreError, match="names a database server, not a SQLite file"):
        store_file("postgresql://db.example/twelvefold")
    for wrong in ["sqlite://relative.db", "sqlite:///", "mysql://x/y", "", "http://x/\x1b[2J"]:
        with pytest.raises(StoreError) as caught:
            store_file(wrong)
        assert "\x1b" not in str(caught.value)


def test_a_libpq_keyword_value_string_is_refused_and_its_password_never_shown(
    workdir: Path,
) -> None:
    """Taken for a file name, `host=… password=…` was created as a SQLite file by `run`
    and printed, password and all, by every command that could not find it."""
    conninfo = "host=127.0.0.1 password=S3cretPW dbname=t"
    write_cassette(workdir / "deploy.jsonl")
    for args in [
        ("threads",),
        ("run", str(EXAMPLES / "deploybot.agent"), "--input", "deploy v1", "--cassette",
         "deploy.jsonl"),
        ("db", "upgrade"),
    ]:  # fmt: skip
        code, out, err = invoke(*args, "--store", conninfo)
        assert code == 1, (args, out, err)
        assert err.startswith("error: a store is a URL") and err.count("\n") == 1, err
        assert "keywords: host, password, dbname" in err and "postgresql://user@host" in err
        assert "S3cretPW" not in out + err
    assert list(workdir.iterdir()) == [workdir / "deploy.jsonl"]  # no file was made
    # A file whose name holds `=` is still a file, written as a URL.
    assert store_file("sqlite:///a=b.db") == Path("a=b.db")


def test_every_db_command_takes_a_store_url(workdir: Path) -> None:
    write_cassette(workdir / "deploy.jsonl")
    code, out, err = invoke(
        "run", str(EXAMPLES / "deploybot.agent"), "--input", "deploy v1.2.3 to production",
        "--cassette", "deploy.jsonl", "--json", "--store", "sqlite:///data/threads.db",
    )  # fmt: skip
    assert code == 0, err
    assert (workdir / "data" / "threads.db").is_file()
    thread = json.loads(out.splitlines()[-1])["thread_id"]
    absolute = f"sqlite:///{workdir / 'data' / 'threads.db'}"
    for args in [("threads", "--json"), ("show", thread, "--json")]:
        code, out, err = invoke(*args, "--store", absolute)
        assert code == 0, err
        assert thread in out
    # Nothing listens on port 1: one line naming the store, without its password.
    nowhere = "postgresql://ana:s3cret-pw@127.0.0.1:1/threads"
    for args in [("threads",), ("serve", str(EXAMPLES), "--port", "0"), ("token", "list")]:
        code, out, err = invoke(*args, "--store", nowhere)
        assert code == 1 and "cannot use the store at postgresql://ana:***@127.0.0.1:1" in err
        assert "s3cret" not in out + err and "Traceback" not in err and err.count("\n") == 1


def test_tokens_are_printed_once_and_stored_only_as_hashes(workdir: Path) -> None:
    code, out, err = invoke("token", "create", "carol", "--store", "sqlite:///t.db", "--create")
    assert code == 0, err
    token = out.strip()
    assert token.startswith("tf_") and len(token) > 40
    assert token.encode() not in (workdir / "t.db").read_bytes()
    tokens = TokenStore(workdir / "t.db")
    try:
        assert tokens.verify(token) == "carol"
        assert tokens.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        (info,) = tokens.list()
    finally:
        tokens.close()
    code, out, _ = invoke("token", "list", "--db", "t.db", "--json")
    assert json.loads(out) == [
        {"id": info.id, "person": "carol", "created_at": info.created_at, "revoked_at": None}
    ]
    assert token not in out
    assert invoke("token", "revoke", info.id, "--db", "t.db")[0] == 0
    code, _, err = invoke("token", "revoke", info.id, "--db", "t.db")
    assert code == 1 and "no live token" in err
    tokens = TokenStore(workdir / "t.db")
    try:
        assert tokens.verify(token) is None
    finally:
        tokens.close()


def test_token_create_refuses_a_store_that_is_not_there_unless_told_to_make_one(
    workdir: Path,
) -> None:
    """Found by a red team: `token create` made an empty store at any path, a mistyped
    `--db` too, and stored the token where no server would read it."""
    code, out, err = invoke("token", "create", "carol", "--db", "typo/threads.db")
    assert (code, out) == (1, "")
    assert err == (
        "error: no store at typo/threads.db: give --create to make a new one there (for the"
        " first token, before the first `twelvefold serve`), or check --db and TWELVEFOLD_DB\n"
    )
    assert list(workdir.iterdir()) == []  # nothing made, not even the folder
    code, out, err = invoke("token", "create", "carol", "--db", "new/threads.db", "--create")
    assert code == 0, err
    assert out.startswith("tf_")
    code, out, _ = invoke("token", "list", "--db", "new/threads.db", "--json")
    assert [t["person"] for t in json.loads(out)] == ["carol"]
    # A store that is there (made by `run`, `serve` or a first token) needs no --create.
    code, out, err = invoke("token", "create", "dave", "--db", "new/threads.db")
    assert code == 0 and out.startswith("tf_"), err


def test_token_refusals_are_one_line(workdir: Path) -> None:
    for person in ["", " carol", "car\nol", "\x1b[2J"]:
        code, out, err = invoke("token", "create", person, "--db", "t.db")
        assert (code, out) == (1, ""), person
        assert err.startswith("error: ") and "\x1b" not in err
    code, _, err = invoke("token", "list", "--db", "missing.db")
    assert code == 1 and err == (
        "error: no store at missing.db (check --db and TWELVEFOLD_DB; `twelvefold token create"
        " PERSON --db missing.db --create` makes one)\n"
    )


def test_serve_refuses_what_it_cannot_serve_safely(workdir: Path) -> None:
    code, _, err = invoke("serve", str(EXAMPLES), "--insecure-local", "--host", "0.0.0.0")
    assert code == 1 and "loopback" in err
    twin = workdir / "twin"
    twin.mkdir()
    (twin / "deploybot.agent").write_text((EXAMPLES / "deploybot.agent").read_text())
    code, _, err = invoke("serve", str(EXAMPLES / "deploybot.agent"), str(twin))
    assert code == 1 and "two agents are named `deploybot`" in err
    empty = workdir / "empty"
    empty.mkdir()
    code, _, err = invoke("serve", str(empty))
    assert code == 1 and "holds no .agent file" in err
    code, _, err = invoke("serve", str(workdir / "nowhere.agent"))
    assert code == 1 and err.startswith("error: ")
    # Each refused start left an empty store behind, which later commands took for one.
    assert not (workdir / ".twelvefold" / "threads.db").exists()
    code, _, err = invoke("serve", str(workdir / "nowhere.agent"), "--db", "new/x.db")
    assert code == 1 and not (workdir / "new").exists()


def test_a_host_refused_for_insecure_local_is_escaped_in_its_error_line(workdir: Path) -> None:
    """Found by a red team: `--host $'a\\nb'` printed a raw line break inside the `error:`
    line, so the host could forge a line of its own below it."""
    code, _, err = invoke(
        "serve", str(EXAMPLES), "--insecure-local", "--host", "a\nerror: forged\x1b[2J"
    )
    assert code == 1
    (said,) = err.splitlines()
    assert said.startswith("error: --insecure-local serves without authentication"), said
    assert said.endswith("not a\\nerror: forged\\u001b[2J"), said


def test_serve_on_a_taken_port_says_so_in_one_line_and_leaves_nothing_behind(
    workdir: Path,
) -> None:
    """Found by a red team: the new empty store (and its folder) stayed when uvicorn could
    not bind, and the reason was uvicorn's log line. The port is bound once the agents are
    checked and before a store is opened, so a taken one refuses the start with no store
    made."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["serve", str(EXAMPLES / "deploybot.agent"), "--db", "new/threads.db",
                  "--port", str(port), "--insecure-local"],
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"error: cannot listen on 127.0.0.1:{port}: the port is taken (address already in"
        " use): stop what uses it, or give another --port\n"
    )
    assert not (workdir / "new").exists()  # no store, nor its folder (the compile cache stays)


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize("option", ["--grace", "--sweep-seconds"])
def test_seconds_options_refuse_nan(command: str, option: str) -> None:
    """NaN passes every comparison a range check makes: it is refused by name."""
    result = CliRunner().invoke(cli, [command, option, "nan", str(EXAMPLES)])
    assert result.exit_code == 2 and "not a number of seconds" in result.output, result.output


def test_a_token_is_revoked_by_pasting_it_whole_and_its_secret_is_never_printed(
    workdir: Path,
) -> None:
    """Whoever holds a leaked token revokes it by pasting it (rt5): only the id part of
    it names the row, and the whole token must match that row."""
    made = [invoke("token", "create", p, "--db", "t.db", "--create")[1].strip() for p in "ab"]
    leaked, other = made
    secret = leaked.removeprefix("tf_").partition("_")[2]  # (a secret may hold `_` too)
    wrong = leaked[:-1] + ("A" if leaked[-1] != "A" else "B")  # its id, another secret
    code, out, err = invoke("token", "revoke", wrong, "--db", "t.db")
    assert code == 1 and err.startswith("error: no live token") and err[-1] == "\n"
    assert secret[:-1] not in out + err
    code, out, err = invoke("token", "revoke", leaked, "--db", "t.db")
    assert code == 0, err
    assert secret not in out + err and leaked.split("_")[1] in out
    tokens = TokenStore(workdir / "t.db")
    try:
        assert tokens.verify(leaked) is None and tokens.verify(other) == "b"
    finally:
        tokens.close()


def test_reserved_person_names_get_no_token(workdir: Path) -> None:
    """`schedule:NAME` is who a schedule's launches are recorded as, `timeout` who an
    approval's timeout rejects as: a token for either would pass as them."""
    for person in ["schedule:nightly", "schedule:", "timeout"]:
        code, out, err = invoke("token", "create", person, "--db", "t.db", "--create")
        assert (code, out) == (1, ""), person
        assert err.startswith("error: ") and "reserved" in err and err.count("\n") == 1
    code, out, _ = invoke("token", "create", "schedules", "--db", "t.db", "--create")
    assert code == 0 and out.startswith("tf_")
