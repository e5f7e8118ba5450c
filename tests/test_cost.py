"""Cost (runtime/usage.py, docs/runtime.md "Cost"): tokens and USD on every model step's
event, priced from `[prices]` over the defaults; totals per thread in the view, `show`,
`threads`, and `twelvefold stats` over a store. The model is the real openai + instructor
client against the scripted server (11 input and 7 output tokens per reply)."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import EXAMPLES, RecordingNotifier
from tests.support.e2e import ModelTurns
from tests.support.openai_server import ScriptedOpenAI
from twelvefold.cli import cli
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.config import Config, ConfigError
from twelvefold.runtime.loading import AgentLoadError
from twelvefold.runtime.model import OpenAIModel
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.types import ModelOutput, Usage
from twelvefold.runtime.usage import (
    DEFAULT_PRICES,
    MAX_CALL_COST,
    MAX_CALL_TOKENS,
    MAX_PRICE,
    Prices,
    Totals,
    records,
    totals,
    valid_cost,
    with_children,
)

REPO = Path(__file__).resolve().parents[1]
MINI_IN, MINI_OUT = DEFAULT_PRICES["gpt-4o-mini"]
ONE_CALL = 11 * MINI_IN / 1e6 + 7 * MINI_OUT / 1e6


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the calculator example (agent, tools, prompts) in its own folder, so a
    test can give it a configuration of its own."""
    shutil.copy(EXAMPLES / "calculator.agent", tmp_path / "calculator.agent")
    shutil.copytree(EXAMPLES / "calculator", tmp_path / "calculator")
    shutil.copytree(REPO / "prompts", tmp_path / "prompts")
    (tmp_path / "twelvefold.toml").write_text("")
    return tmp_path


def runtime_for(server: ScriptedOpenAI, db: Path, model: str) -> Runtime:
    real = OpenAIModel(model=model, base_url=server.base_url, api_key="t", transport_retries=0)
    return Runtime(SqliteStore(db), model=real, notifier=RecordingNotifier())


def multiply_then_done(server: ScriptedOpenAI, project: Path, model: str) -> tuple[Any, list[Any]]:
    """Run `3 times 4` on the calculator copy with `model`: its view and its events."""
    ModelTurns(server).then(
        {"type": "Multiply", "a": 3, "b": 4}, {"type": "DoneForNow", "message": "12"}
    )
    with runtime_for(server, project / "t.db", model) as rt:
        view = rt.launch(project / "calculator.agent", "3 times 4")
        return view, rt.events(view.id)


def test_each_model_step_records_its_tokens_and_cost_and_the_view_adds_them_up(
    openai_server: ScriptedOpenAI, project: Path
) -> None:
    view, events = multiply_then_done(openai_server, project, "gpt-4o-mini")
    assert view.status == "finished"
    calls = [e for e in events if isinstance(e, ModelOutput)]
    assert len(calls) == 2
    for call in calls:
        assert call.usage is not None
        assert (call.usage.input_tokens, call.usage.output_tokens) == (11, 7)
        assert call.usage.cost_usd == pytest.approx(ONE_CALL)
    assert view.to_json()["usage"] == {
        "steps": 3,  # two model calls and the tool call
        "model_calls": 2,
        "input_tokens": 22,
        "output_tokens": 14,
        "cost_usd": pytest.approx(2 * ONE_CALL),
        "unpriced_calls": 0,
        "waited_seconds": 0.0,
    }


def test_the_projects_price_table_overrides_the_defaults(
    openai_server: ScriptedOpenAI, project: Path
) -> None:
    (project / "twelvefold.toml").write_text(
        '[prices]\n"gpt-4o-mini" = { input = 1000, output = 2000 }\n'
        '"house-model" = { input = 0, output = 0 }\n'
    )
    view, _ = multiply_then_done(openai_server, project, "gpt-4o-mini-2024-07-18")
    # Priced by the longest configured name it starts with (a dated model version).
    assert view.usage.cost_usd == pytest.approx(2 * (11 * 1000 + 7 * 2000) / 1e6)


def test_a_model_without_a_price_has_an_unknown_cost_never_a_guessed_one(
    openai_server: ScriptedOpenAI, project: Path
) -> None:
    view, events = multiply_then_done(openai_server, project, "scripted-model")
    assert all(e.usage.cost_usd is None for e in events if isinstance(e, ModelOutput) and e.usage)
    usage = view.to_json()["usage"]
    assert (usage["cost_usd"], usage["unpriced_calls"], usage["input_tokens"]) == (None, 2, 22)


def test_a_broken_price_table_is_refused_before_a_thread_exists(
    openai_server: ScriptedOpenAI, project: Path
) -> None:
    """Checked at launch (`require_settings`), not as a step failure of every thread."""
    (project / "twelvefold.toml").write_text(
        '[prices]\n"gpt-4o-mini" = { input = -1, output = 1 }\n'
    )
    with runtime_for(openai_server, project / "t.db", "gpt-4o-mini") as rt:
        with pytest.raises(AgentLoadError) as refused:
            rt.launch(project / "calculator.agent", "3 times 4")
        assert list(rt.store.threads()) == []
    assert "prices.gpt-4o-mini" in str(refused.value) and "`input` is -1" in str(refused.value)
    assert openai_server.requests == []


def test_price_lookup_and_validation() -> None:
    prices = Prices.of(Config(settings={"prices": {"gpt-4o": {"input": 1, "output": 2}}}))
    assert prices.price("gpt-4o") == (1.0, 2.0)
    assert prices.price("gpt-4o-2024-08-06") == (1.0, 2.0)
    assert prices.price("gpt-4o-mini-2024-07-18") == DEFAULT_PRICES["gpt-4o-mini"]
    assert prices.price("gpt-4ox") is None
    assert prices.price(None) is None
    assert prices.cost("gpt-4o", Usage(input_tokens=1_000_000, output_tokens=500_000)) == 2.0
    assert prices.cost("gpt-4o", Usage(latency_ms=3.0)) is None  # no token counts
    for bad in ({"input": 1}, {"input": True, "output": 1}, {"input": math.nan, "output": 1}, 3):
        with pytest.raises(ConfigError, match=r"prices\.m must be"):
            Prices.of(Config(settings={"prices": {"m": bad}}))
    for huge in (1e308, MAX_PRICE + 1):
        with pytest.raises(ConfigError, match=r"prices\.m must be .* from 0 to 10,000.*`output`"):
            Prices.of(Config(settings={"prices": {"m": {"input": 1, "output": huge}}}))
    assert Prices.of(Config(settings={"prices": {"m": {"input": 0, "output": MAX_PRICE}}}))
    with pytest.raises(ConfigError, match=r"prices\.m must be .*unknown key\(s\) `extra`"):
        Prices.of(Config(settings={"prices": {"m": {"input": 1, "output": 2, "extra": 3}}}))
    # Token counts no float holds cost `inf`, which no step records (runtime/loop.py).
    assert prices.cost("gpt-4o", Usage(input_tokens=10**400, output_tokens=1)) == math.inf
    assert not valid_cost(math.inf) and not valid_cost(-3.5) and not valid_cost(1e308)
    assert valid_cost(0) and valid_cost(MAX_CALL_COST)
    with pytest.raises(ConfigError, match="`prices` must be a table"):
        Prices.of(Config(settings={"prices": ["gpt-4o"]}))


def test_totals_of_an_old_log_without_usage_are_zero() -> None:
    """Events as a runtime before cost wrote them: no usage at all, or latency only."""
    codec = Codec()
    old = [
        '{"kind": "started", "step": "s", "input": "x"}',
        '{"kind": "model_output", "step": "s", "output": "a"}',
        '{"kind": "model_output", "step": "s", "usage": {"latency_ms": 3.5}, "output": "b"}',
    ]
    found = totals(records(codec.loads_event(line) for line in old))
    assert found == Totals(
        steps=2,
        model_calls=2,
        cost_usd=None,
        unpriced_calls=2,
        uncounted_input=2,
        uncounted_output=2,
    )
    assert found.to_json()["cost_usd"] is None
    assert found.cost_text == "?"


def test_waiting_time_runs_from_the_first_notice_to_the_decision() -> None:
    rows = [
        ("started", "2025-06-01T09:00:00.000000Z", None),
        ("model_output", "2025-06-01T09:00:01.000000Z", Usage(1.0, 5, 6, 0.5)),
        ("notified", "2025-06-01T09:00:02.000000Z", None),
        ("notified", "2025-06-01T10:00:02.000000Z", None),  # a notice tried again
        ("approved", "2025-06-01T11:00:02.000000Z", None),
        ("notified", "not a time", None),  # edited by hand: counts as no time
        ("answered", "2025-06-01T12:00:02.000000Z", None),
    ]
    found = totals(rows)
    assert (found.waited_seconds, found.cost_usd, found.input_tokens) == (7200.0, 0.5, 5)


# ---- the CLI ----------------------------------------------------------------------------


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture
def store_with_threads(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str, str]:
    """One finished calculator thread and one waiting for an answer (both priced)."""
    monkeypatch.chdir(project)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "TWELVEFOLD_DB"):
        monkeypatch.delenv(name, raising=False)
    db = project / "threads.db"
    turns = ModelTurns(openai_server)
    turns.then({"type": "Multiply", "a": 3, "b": 4}, {"type": "DoneForNow", "message": "12"})
    turns.then({"type": "ClarificationRequest", "message": "What?"})
    ids = []
    for text in ("3 times 4", "hello"):
        code, out = invoke(
            "run", "calculator.agent", "--input", text, "--db", str(db),
            "--model", "gpt-4o-mini", "--json",
        )  # fmt: skip
        assert code in (0, 3), out
        ids.append(json.loads(out.splitlines()[-1])["thread_id"])
    return db, ids[0], ids[1]


def test_show_threads_and_stats_report_tokens_and_cost(
    store_with_threads: tuple[Path, str, str],
) -> None:
    db, finished, waiting = store_with_threads
    code, out = invoke("show", finished, "--db", str(db))
    assert code == 0, out
    assert "  usage: 3 steps, 2 model calls, 22→14 tokens, $0.0000" in out
    assert f"${ONE_CALL:.4f}" in out  # each model step's own line

    code, out = invoke("threads", "--db", str(db), "--json")
    listed = {t["thread_id"]: t["usage"] for t in json.loads(out)}
    assert listed[finished]["cost_usd"] == pytest.approx(2 * ONE_CALL)
    assert (listed[waiting]["model_calls"], listed[waiting]["input_tokens"]) == (1, 11)
    code, out = invoke("threads", "--db", str(db))
    header, *rows = out.splitlines()
    assert "TOKENS" in header and "COST" in header
    assert any(finished in row and " 36 " in row for row in rows)

    code, out = invoke("stats", "--db", str(db), "--json")
    assert code == 0, out
    stats = json.loads(out)["calculator"]
    assert stats["threads"] == {
        "running": 0, "waiting": 1, "finished": 1, "failed": 0, "cancelled": 0,
    }  # fmt: skip
    assert stats["usage"]["steps"] == 4
    assert stats["usage"]["model_calls"] == 3
    assert (stats["usage"]["input_tokens"], stats["usage"]["output_tokens"]) == (33, 21)
    assert stats["usage"]["cost_usd"] == pytest.approx(3 * ONE_CALL)
    assert stats["usage"]["waited_seconds"] >= 0
    code, out = invoke("stats", "--db", str(db))
    header, row = out.splitlines()
    assert row.split()[:8] == ["calculator", "0", "1", "1", "0", "0", "4", "3"]


def test_reports_survive_a_damaged_row(store_with_threads: tuple[Path, str, str]) -> None:
    db, _, _ = store_with_threads
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE events SET body = 'not json' WHERE seq = 2")
        conn.execute(
            "UPDATE events SET body = json_set(body, '$.usage.input_tokens', 'many') WHERE seq = 4"
        )
    code, out = invoke("stats", "--db", str(db), "--json")
    assert code == 0, out
    assert json.loads(out)["calculator"]["usage"]["steps"] >= 1
    code, out = invoke("threads", "--db", str(db))
    assert code == 0, out


def test_reports_count_a_hand_edited_cost_that_is_not_valid_as_unknown(
    store_with_threads: tuple[Path, str, str],
) -> None:
    """A negative, infinite or absurd cost (a store edited by hand) is left out of every
    sum and counted as unknown, never printed as a number."""
    db, finished, _ = store_with_threads
    with sqlite3.connect(db) as conn:
        calls = conn.execute(
            "SELECT thread, seq, body FROM events WHERE json_extract(body, '$.kind') = "
            "'model_output' ORDER BY thread, seq"
        ).fetchall()
        assert len(calls) == 3
        for (thread, seq, body), cost in zip(calls, ("-3.5", "1e308", "Infinity"), strict=True):
            event = json.loads(body)
            event["usage"]["cost_usd"] = "COST"
            edited = json.dumps(event).replace('"COST"', cost)
            conn.execute(
                "UPDATE events SET body = ? WHERE thread = ? AND seq = ?", (edited, thread, seq)
            )
    code, out = invoke("stats", "--db", str(db), "--json")
    assert code == 0, out
    assert "Infinity" not in out and "NaN" not in out
    usage = json.loads(out)["calculator"]["usage"]
    # (A body with `Infinity` is not JSON to SQLite; Python reads it: the call counts.)
    assert (usage["model_calls"], usage["unpriced_calls"]) == (3, 3)
    assert usage["cost_usd"] is None  # none of the calls left has a valid cost
    code, out = invoke("stats", "--db", str(db))
    assert code == 0, out
    assert (
        "-3.5" not in out and "inf" not in out.lower() and len(max(out.splitlines(), key=len)) < 120
    )
    code, out = invoke("threads", "--db", str(db), "--json")
    assert code == 0 and "Infinity" not in out
    assert {t["thread_id"] for t in json.loads(out)} >= {finished}


def test_stats_on_a_missing_store_is_one_line(tmp_path: Path) -> None:
    code, out = invoke("stats", "--db", str(tmp_path / "none.db"))
    assert code == 1
    assert out.startswith("error: ") and len(out.strip().splitlines()) == 1


BOSS = """
agent boss "Hands arithmetic to the calculator." {
  input string
  start ask
}

type DoneForNow "Tell the user what was worked out; the work is done." {
  message: string "the answer, with the result in it"
}

agent ask(string) -> DoneForNow = "calculator.agent" {
  next done
  on error -> failed
}

final done(DoneForNow)
final failed
"""


def boss_project(openai_server: ScriptedOpenAI, project: Path) -> ModelTurns:
    """BOSS beside the calculator, and the model's turns for its child until it asks."""
    (project / "boss.agent").write_text(BOSS)
    turns = ModelTurns(openai_server)
    turns.then(
        {"type": "Multiply", "a": 3, "b": 4}, {"type": "ClarificationRequest", "message": "?"}
    )
    return turns


def test_a_parents_totals_include_its_childs_and_stats_count_each_call_once(
    openai_server: ScriptedOpenAI, project: Path
) -> None:
    turns = boss_project(openai_server, project)
    db = project / "t.db"
    with runtime_for(openai_server, db, "gpt-4o-mini") as rt:
        parent = rt.launch(project / "boss.agent", "3 times 4")
        assert (parent.waiting_for, parent.child) == ("agent", f"{parent.id}~{parent.request}")
        child = rt.get(parent.child or "")
        assert child.waiting_for == "answer"
        # The parent made no model call itself: all it cost so far is its child's.
        for view in (parent, rt.get(parent.id)):
            assert (view.usage.steps, view.usage.model_calls) == (3, 2)
            assert view.usage.cost_usd == pytest.approx(2 * ONE_CALL)
        turns.then({"type": "DoneForNow", "message": "12"})
        rt.resume(child.id, answer="just multiply", request=child.request)
        done = rt.get(parent.id)
        assert done.status == "finished"
        assert done.to_json()["usage"]["model_calls"] == 3
        assert done.to_json()["usage"]["input_tokens"] == 33
    code, out = invoke("show", parent.id, "--db", str(db))
    assert code == 0, out
    assert "  usage: 4 steps, 3 model calls, 33→21 tokens" in out, out
    code, out = invoke("threads", "--db", str(db), "--json")
    assert code == 0, out
    listed = {t["thread_id"]: t["usage"] for t in json.loads(out)}
    assert listed[parent.id]["model_calls"] == listed[child.id]["model_calls"] == 3
    assert listed[parent.id]["cost_usd"] == pytest.approx(3 * ONE_CALL)
    code, out = invoke("stats", "--db", str(db), "--json")
    assert code == 0, out
    stats = {name: s["usage"]["model_calls"] for name, s in json.loads(out).items()}
    assert stats == {"boss": 0, "calculator": 3}  # each call once, under its own agent


def test_with_children_adds_each_descendant_once_to_each_ancestor() -> None:
    def calls(n: int) -> Totals:
        return Totals(steps=n, model_calls=n)

    own = {"a": calls(1), "a~r-1": calls(2), "a~r-1~s-2": calls(4), "a~x": calls(8)}
    links = {"a": ["a~r-1"], "a~r-1": ["a~r-1~s-2"]}
    rolled = with_children(own, links)
    assert {k: v.model_calls for k, v in rolled.items()} == {
        "a": 7,  # itself, its child and its grandchild; not `a~x`, which no log links
        "a~r-1": 6,
        "a~r-1~s-2": 4,
        "a~x": 8,  # named like a child, linked by no log: counted on its own
    }
    assert with_children({}, {}) == {}
    # A forged loop of links (the runtime never makes one) ends, each counted once.
    assert with_children({"p": calls(1), "q": calls(2)}, {"p": ["q"], "q": ["p"]})["p"] == calls(3)


def test_a_thread_a_user_names_like_a_child_is_not_counted_into_the_parent(
    openai_server: ScriptedOpenAI, project: Path
) -> None:
    """Only the links both logs make join a child to its parent: a thread launched with
    the id `PARENT~anything` is no child of PARENT, in its view or in `threads`."""
    turns = boss_project(openai_server, project)
    db = project / "t.db"
    with runtime_for(openai_server, db, "gpt-4o-mini") as rt:
        parent = rt.launch(project / "boss.agent", "3 times 4")
        assert parent.usage.model_calls == 2  # its child's two calls
        turns.then(
            {"type": "Multiply", "a": 1, "b": 1}, {"type": "ClarificationRequest", "message": "?"}
        )
        forged = rt.launch(project / "calculator.agent", "1 times 1", thread_id=f"{parent.id}~x")
        assert forged.usage.model_calls == 2
        assert rt.get(parent.id).usage.model_calls == 2
    code, out = invoke("threads", "--db", str(db), "--json")
    assert code == 0, out
    listed = {t["thread_id"]: t["usage"]["model_calls"] for t in json.loads(out)}
    assert listed == {parent.id: 2, parent.child: 2, forged.id: 2}


def test_threads_prints_every_field_from_the_store_escaped(
    store_with_threads: tuple[Path, str, str],
) -> None:
    """A newline in a stored field would start a row of its own (a forged one, here)."""
    db, finished, _ = store_with_threads
    forged = f"calc\n{'0' * 16}  calculator  finished"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE threads SET agent = ?, step = ?, updated_at = ?, request = ? WHERE id = ?",
            (forged, "done\r\x1b[2J", "2026\n", "r\x1b]0;x\x07", finished),
        )
    code, out = invoke("threads", "--db", str(db))
    assert code == 0, out
    _, *rows = out.splitlines()
    assert len(rows) == 2, out
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out
    (row,) = [r for r in rows if r.startswith(finished)]
    assert "calc\\n0000" in row and "done\\r\\x1b[2J" in row and "2026\\n" in row


def test_a_fork_is_not_counted_again_in_stats_but_shows_its_whole_log(
    store_with_threads: tuple[Path, str, str],
) -> None:
    """`stats` counts each call once: a fork's copied events were spent by the thread
    they came from. A fork's own view shows what its whole log cost (docs/runtime.md)."""
    db, finished, _ = store_with_threads
    code, before = invoke("stats", "--db", str(db), "--json")
    assert code == 0, before
    forks = []
    for _ in range(2):
        code, out = invoke("fork", finished, "--at", "4", "--db", str(db), "--json")
        assert code == 0, out
        forks.append(json.loads(out))
    code, after = invoke("stats", "--db", str(db), "--json")
    assert code == 0, after
    counted = json.loads(after)["calculator"]
    spent = {k: v for k, v in counted["usage"].items() if k != "waited_seconds"}
    # (The waiting thread's open wait grows between the two reads: left out.)
    assert spent == {
        k: v for k, v in json.loads(before)["calculator"]["usage"].items() if k != "waited_seconds"
    }
    assert counted["threads"]["waiting"] + counted["threads"]["running"] >= 1
    assert sum(counted["threads"].values()) == 4  # the forks are threads of their own
    # The fork at event 4 holds the first call (and the tool's): its view says so.
    assert forks[0]["usage"]["model_calls"] == 1
    assert forks[0]["usage"]["cost_usd"] == pytest.approx(ONE_CALL)


def test_reports_count_a_token_count_out_of_bounds_as_unknown(
    store_with_threads: tuple[Path, str, str],
) -> None:
    """A count above `MAX_CALL_TOKENS` (a store edited by hand, or written before such
    counts were refused) adds nothing to any report, from events or from stored rows
    (where SQLite reads 10**400 as a float and PostgreSQL as an int)."""
    huge = Usage(latency_ms=1.0, input_tokens=10**400, output_tokens=MAX_CALL_TOKENS + 1)
    assert totals([("model_output", None, huge)]).input_tokens == 0
    assert totals([("model_output", None, huge)]).output_tokens == 0
    db, _, _ = store_with_threads
    with sqlite3.connect(db) as conn:
        (thread, seq, body), *_ = conn.execute(
            "SELECT thread, seq, body FROM events WHERE json_extract(body, '$.kind') = "
            "'model_output' ORDER BY thread, seq"
        ).fetchall()
        event = json.loads(body)
        event["usage"].update(input_tokens=10**400, output_tokens=MAX_CALL_TOKENS + 1)
        conn.execute(
            "UPDATE events SET body = ? WHERE thread = ? AND seq = ?",
            (json.dumps(event), thread, seq),
        )
    code, out = invoke("stats", "--db", str(db), "--json")
    assert code == 0, out
    usage = json.loads(out)["calculator"]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (33 - 11, 21 - 7)
    code, out = invoke("threads", "--db", str(db))
    assert code == 0 and "e+" not in out and len(max(out.splitlines(), key=len)) < 200


def test_stats_shows_every_status_it_counts(store_with_threads: tuple[Path, str, str]) -> None:
    """A status twelvefold does not know (an edited row) is counted in the table, not only
    in --json: an OTHER column, and a line naming it (escaped)."""
    db, finished, _ = store_with_threads
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE threads SET status = 'exploded\x1b[2J' WHERE id = ?", (finished,))
    code, out = invoke("stats", "--db", str(db), "--json")
    assert json.loads(out)["calculator"]["threads"]["exploded\x1b[2J"] == 1
    code, out = invoke("stats", "--db", str(db))
    assert code == 0, out
    header, row, note = out.splitlines()
    assert header.split()[1:7] == ["RUN", "WAIT", "DONE", "FAIL", "CANC", "OTHER"]
    assert row.split()[:9] == ["calculator", "0", "1", "0", "0", "0", "1", "4", "3"]
    assert note == "OTHER: threads with a status twelvefold does not know: exploded\\u001b[2J (1)"


def test_stats_without_unknown_statuses_has_no_other_column(
    store_with_threads: tuple[Path, str, str],
) -> None:
    code, out = invoke("stats", "--db", str(store_with_threads[0]))
    assert code == 0 and "OTHER" not in out


@pytest.mark.parametrize("count", ["1e300", "'11'", "-1", "2.5", "json('[1]')"])
def test_stats_marks_a_token_total_that_leaves_out_a_count_it_cannot_read(
    store_with_threads: tuple[Path, str, str], count: str
) -> None:
    """A count above the bound, a string, a negative or a fraction (a store edited by
    hand) is left out of TOKENS IN, and the total says so with `+?`, as COST does for a
    cost it cannot read."""
    db, _, _ = store_with_threads
    with sqlite3.connect(db) as conn:
        conn.execute(
            f"UPDATE events SET body = json_set(body, '$.usage.input_tokens', {count}) WHERE"
            " (thread, seq) = (SELECT thread, seq FROM events WHERE json_extract(body, '$.kind')"
            " = 'model_output' ORDER BY thread, seq LIMIT 1)"
        )
    code, out = invoke("stats", "--db", str(db), "--json")
    usage = json.loads(out)["calculator"]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (22, 21)
    assert (usage["calls_without_input_count"], usage["calls_without_output_count"]) == (1, 0)
    code, out = invoke("stats", "--db", str(db))
    assert code == 0, out
    header, row = out.splitlines()
    assert row.split()[8:10] == ["22+?", "21"], out
    assert len(row) == len(header.rstrip()) or row.index("22+?") < header.index("TOKENS OUT")
