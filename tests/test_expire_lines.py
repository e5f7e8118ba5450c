"""`twelvefold expire` says what ended each wait, in the words of its kind: a sleep ended
(it did not time out), a wait for an event timed out with no event, an approval timed out
with no decision, a question with no answer (a red team, rt9: a `sleep` that ended was
printed as "`cool_off` timed out")."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from twelvefold.cli import cli
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.store import SqliteStore

AGENTS = {
    "naps": """
agent naps { input string start nap }
sleep nap(string) 10m next done
final done(string)
""",
    "holds": """
agent holds { input string start hold }
type Paid { amount: int }
wait hold for Paid {
  timeout 1h -> gone
  next done
}
final done(Paid)
final gone
""",
    "asks": """
agent asks { input Job start ok }
type Job { name: string }
approval ok(Job) {
  ask "Go on with {{ name }}?"
  timeout 1h
  on approved -> done
  on rejected -> stopped
}
final done(Job)
final stopped
""",
    "questions": """
agent questions { input Job start why }
type Job { name: string }
human why(Job) {
  ask "Why {{ name }}?"
  timeout 1h
  next done
}
final done
""",
}


@pytest.fixture
def swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Each agent's thread left waiting, then one `expire` a day later: its line, by agent."""
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_LOG", "1")  # someone is told: the waits start
    monkeypatch.delenv("TWELVEFOLD_NOTIFY_WEBHOOK", raising=False)
    ids = {}
    with Runtime(SqliteStore(tmp_path / "t.db"), cache_dir=tmp_path / "c") as rt:
        for name, source in AGENTS.items():
            (tmp_path / f"{name}.agent").write_text(source)
            given = {"name": "x"} if "Job" in source else "x"
            ids[rt.launch(tmp_path / f"{name}.agent", given).id] = name
    result = CliRunner().invoke(
        cli, ["expire", "--now", "2999-01-01T00:00:00Z", "--db", str(tmp_path / "t.db")]
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("thread ")]
    by_agent = {ids[line.split()[1].rstrip(":")]: line for line in lines}
    assert set(by_agent) == set(AGENTS), result.output
    return by_agent


def test_a_sleep_that_ends_did_not_time_out(swept: dict[str, str]) -> None:
    line = swept["naps"]
    assert "timed out" not in line
    assert "`nap`: the sleep ended; now finished" in line, line


def test_each_kind_of_wait_says_what_ended_it(swept: dict[str, str]) -> None:
    assert "`hold`: no event came before its timeout; now finished" in swept["holds"]
    assert "`ok`: no decision came before its timeout, rejected" in swept["asks"]
    assert "`why`: no answer came before its timeout, failed" in swept["questions"]
