"""One rule for a thread's `cost_usd` on every surface (docs/runtime.md, "Cost"): unknown
(None, `null`, `?`) when model calls were made and none of them was priced; zero when no
model call was made (nothing was spent); else the priced calls' sum, `unpriced_calls`
saying how many it leaves out. A red team, rt9: a thread with no model call showed 0.0
where the docs said null, and `view.usage` showed `cost_usd=0.0, unpriced_calls=3` where
`run --json` showed null for the same thread."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import DEPLOY_CASSETTE, EXAMPLES, write_cassette
from twelvefold.cli import cli
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.cassette import CassettePlayer
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.usage import Totals
from twelvefold.server.api import UsageOut

WAITS = """
agent waits { input string start hold }
type Paid { amount: int }
wait hold for Paid { next done }
final done(Paid)
"""


@pytest.fixture
def threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Two threads in one store: `free` made no model call; `unpriced` made two whose
    replies carried no token counts (a cassette's), so neither has a price."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_LOG", "0")
    (tmp_path / "waits.agent").write_text(WAITS)
    cassette = write_cassette(tmp_path / "deploy.jsonl", DEPLOY_CASSETTE)
    with Runtime(SqliteStore(tmp_path / "t.db"), model=CassettePlayer(cassette)) as rt:
        free = rt.launch(tmp_path / "waits.agent", "hi")
        unpriced = rt.launch(EXAMPLES / "deploybot.agent", "deploy v1.2.3")
    assert (free.usage.model_calls, unpriced.usage.model_calls) == (0, 2)
    assert unpriced.usage.unpriced_calls == 2
    return {"free": free, "unpriced": unpriced, "db": str(tmp_path / "t.db")}


def cli_json(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args))
    return json.loads(result.stdout.splitlines()[-1])


EXPECTED = {"free": 0.0, "unpriced": None}


def test_the_python_view_says_unknown_as_the_json_does(threads: dict[str, Any]) -> None:
    for name, expected in EXPECTED.items():
        assert threads[name].usage.cost_usd == expected, name
        assert threads[name].usage.to_json()["cost_usd"] == expected, name


def test_every_surface_shows_the_same_cost(threads: dict[str, Any]) -> None:
    db = threads["db"]
    listed = {t["thread_id"]: t["usage"] for t in cli_json("threads", "--json", "--db", db)}
    stats = cli_json("stats", "--json", "--db", db)
    for name, expected in EXPECTED.items():
        thread_id = threads[name].id
        assert cli_json("show", thread_id, "--json", "--db", db)["usage"]["cost_usd"] == expected
        assert listed[thread_id]["cost_usd"] == expected, name
        assert UsageOut.of(threads[name].usage).cost_usd == expected, name  # /v1/threads
    assert stats["waits"]["usage"]["cost_usd"] == 0.0
    assert stats["deploybot"]["usage"]["cost_usd"] is None


def test_adding_up_keeps_the_rule() -> None:
    nothing = Totals()
    unknown = Totals(steps=2, model_calls=2, cost_usd=None, unpriced_calls=2)
    priced = Totals(steps=1, model_calls=1, cost_usd=0.5)
    assert (nothing + nothing).cost_usd == 0.0
    assert (nothing + unknown).cost_usd is None and (unknown + nothing).cost_usd is None
    both = unknown + priced
    assert (both.cost_usd, both.unpriced_calls, both.cost_text) == (0.5, 2, "$0.5000+?")
    assert unknown.cost_text == "?" and nothing.cost_text == "$0.0000"
    assert Totals(model_calls=1, cost_usd=0.0).cost_text == "$0.0000"  # a free model: known
