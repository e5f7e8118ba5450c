"""`twelvefold threads` lines its columns up whatever the values are (a red team, rt9: a
sub-agent's thread id, `bf0203cc433b1a40~refund-5`, pushed every later column of its row
out of line), and a hostile value stays escaped."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.cells import cell_len

from tests.runtime_helpers import DEPLOY_CASSETTE, EXAMPLES, write_cassette
from twelvefold.cli import cli
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.cassette import CassettePlayer
from twelvefold.runtime.store import SqliteStore

IDS = [
    "short",
    "bf0203cc433b1a40~refund-5",
    "bf0203cc433b1a40~refund-5~check-2~again-7",
    "t\x1b[2J\nerror: forged",
    "スレッド",  # each character two columns wide on a terminal
    "a\ufe0f\u0e01\u0e31x\u0488y",  # marks that take no column (a red team, rt11)
    "b\u3164\u2800\U000e0041z",  # hidden ones, each shown as its escape (rt14)
]


def columns(text: str) -> int:
    """How many terminal columns `text` takes, as rich (an implementation we did not
    write) reads Unicode's tables."""
    return cell_len(text)


@pytest.fixture
def listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_LOG", "0")
    cassette = write_cassette(tmp_path / "deploy.jsonl", DEPLOY_CASSETTE)
    rt = Runtime(SqliteStore(tmp_path / "t.db"), model=CassettePlayer(cassette))
    try:
        for thread_id in IDS:
            rt.launch(EXAMPLES / "deploybot.agent", "deploy v1.2.3", thread_id=thread_id)
    finally:
        rt.close()
    result = CliRunner().invoke(cli, ["threads", "--db", str(tmp_path / "t.db")])
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_every_column_starts_where_its_heading_does(listed: list[str]) -> None:
    header, *rows = listed
    assert len(rows) == len(IDS)
    shown = [("AGENT", "deploybot"), ("STATUS", "waiting"), ("STEP", "approve_deploy"),
             ("REQUEST", "approve_deploy-5")]  # fmt: skip
    for heading, value in shown:
        at = header.index(heading)
        for row in rows:
            assert columns(row[: row.index(value)]) == at, (heading, row)


def test_a_hostile_id_stays_escaped_on_its_own_row(listed: list[str]) -> None:
    assert not any(line.startswith("error: forged") for line in listed)
    assert any(line.startswith("t\\x1b[2J\\nerror: forged ") for line in listed), listed
