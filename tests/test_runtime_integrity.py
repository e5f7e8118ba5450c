"""The log is the truth (issue 8, item 7): a hand-edited database can make a thread fail,
never run a gated tool without an approval in its log.

deploybot launched through the real openai client against the scripted server, stored in
a real SQLite file, then edited by hand the way the issue did: the snapshot alone (the
state says the approval passed), an event, an inserted approval, a log cut short. With
TWELVEFOLD_LOG_KEY set, edits that recompute the plain hashes are refused as well. A
store that trusts its snapshot without proof fails the first check. And a thread whose
agent changed replays under the new reducer only if its whole log still fits.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.runtime_helpers import EXAMPLES, RecordingNotifier
from tests.support.e2e import ModelTurns
from tests.support.legacy import unpin_all
from tests.support.openai_server import Reply, ScriptedOpenAI
from twelvefold.cli import cli
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.integrity import BrokenLog, Chain, LogError
from twelvefold.runtime.loop import AgentChanged
from twelvefold.runtime.model import OpenAIModel
from twelvefold.runtime.store import Restored, Snapshot, SqliteStore, StoreError
from twelvefold.runtime.types import Approved, IllegalEvent

DEPLOYBOT = EXAMPLES / "deploybot.agent"
PROPOSAL = {"type": "DeployBackend", "tag": "v1.2.3", "env": "production"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("DEPLOYBOT_LEDGER", str(path))
    monkeypatch.delenv("DEPLOYBOT_TAGS", raising=False)
    monkeypatch.delenv("TWELVEFOLD_LOG_KEY", raising=False)
    return path


class TrustingStore(SqliteStore):
    """Broken on purpose: believes the snapshot on its sequence number alone (what the
    issue found), and tells the loop it need not check it."""

    def restore(self, thread_id: str, codec: Codec) -> Restored:
        return replace(super().restore(thread_id, codec), keyed=True)

    def _proven_snapshot(
        self, thread_id: str, text: str | None, seal: bytes | None, head: bytes, seq: int
    ) -> Snapshot | None:
        if text is None:
            return None
        data = json.loads(text)
        return Snapshot(data["reducer"], data["seq"], data["state"]) if data["seq"] == seq else None


@contextmanager
def deploybot(
    server: ScriptedOpenAI, db: Path, cache: Path, store_class: type[SqliteStore] = SqliteStore
) -> Iterator[Runtime]:
    model = OpenAIModel(
        model="scripted-model", base_url=server.base_url, api_key="test", transport_retries=0
    )
    store = store_class(db)
    with Runtime(store, model=model, notifier=RecordingNotifier(), cache_dir=cache) as rt:
        try:
            yield rt
        finally:
            store.close()


def waiting_for_approval(server: ScriptedOpenAI, db: Path, cache: Path) -> str:
    ModelTurns(server).then(PROPOSAL)
    with deploybot(server, db, cache) as rt:
        view = rt.launch(DEPLOYBOT, "deploy v1.2.3 to production")
    assert view.waiting_for == "approval"
    return view.id


def deploys(ledger: Path) -> int:
    return len(ledger.read_text().splitlines()) if ledger.exists() else 0


def edit_snapshot_state(db: Path, thread_id: str, cache: Path, **changes: Any) -> None:
    """Rewrite the snapshot's state by hand, leaving everything else (its seal) alone."""
    agent = Runtime(cache_dir=cache).agent(DEPLOYBOT)
    with sqlite3.connect(db) as connection:
        (text,) = connection.execute(
            "SELECT snapshot FROM threads WHERE id = ?", (thread_id,)
        ).fetchone()
        data = json.loads(text)
        state = agent.codec.decode_state(data["state"])
        data["state"] = agent.codec.encode_state(replace(state, **changes))
        connection.execute(
            "UPDATE threads SET snapshot = ? WHERE id = ?", (json.dumps(data), thread_id)
        )


def resume_after_snapshot_edit(
    server: ScriptedOpenAI,
    tmp_path: Path,
    cache: Path,
    store_class: type[SqliteStore],
    reseal: bool = False,
) -> int:
    """The issue's example: the snapshot alone says the approval passed (with `reseal`,
    its seal computed again by someone who read integrity.py, as anyone can without a
    key); resume. Returns how many deploys ran."""
    db = tmp_path / "threads.db"
    thread_id = waiting_for_approval(server, db, cache)
    edit_snapshot_state(db, thread_id, cache, step="deploy", status="running", notified=False)
    if reseal:
        reseal_snapshot(db, thread_id, Chain(None))
    ModelTurns(server).then({"type": "DoneForNow", "message": "deployed"})
    with deploybot(server, db, cache, store_class) as rt:
        with contextlib.suppress(BrokenLog):
            rt.resume(thread_id)
        assert not any(isinstance(e, Approved) for e in rt.events(thread_id))
    return deploys(tmp_path / "ledger.jsonl")


def test_an_edited_snapshot_never_runs_the_gated_tool(
    openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path, ledger: Path
) -> None:
    assert resume_after_snapshot_edit(openai_server, tmp_path, cache, SqliteStore) == 0
    with deploybot(openai_server, tmp_path / "threads.db", cache) as rt:
        (info,) = rt.threads()
        view = rt.get(info.id)
    assert (view.status, view.waiting_for) == ("waiting", "approval")


def test_the_snapshot_test_catches_a_store_that_trusts_its_snapshot(
    openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path, ledger: Path
) -> None:
    assert resume_after_snapshot_edit(openai_server, tmp_path, cache, TrustingStore) == 1


def test_with_a_key_a_snapshot_resealed_with_the_plain_hash_is_ignored(
    openai_server: ScriptedOpenAI,
    tmp_path: Path,
    cache: Path,
    ledger: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWELVEFOLD_LOG_KEY", "a secret the attacker does not know")
    db = tmp_path / "threads.db"
    thread_id = waiting_for_approval(openai_server, db, cache)
    edit_snapshot_state(db, thread_id, cache, step="deploy", status="running", notified=False)
    with sqlite3.connect(db) as connection:  # someone who read integrity.py, without the key
        (text,) = connection.execute("SELECT snapshot FROM threads").fetchone()
        forged = Chain(None).seal(thread_id, text)
        connection.execute("UPDATE threads SET snapshot_seal = ?", (forged,))
    with deploybot(openai_server, db, cache) as rt:
        view = rt.resume(thread_id)
    assert (view.status, deploys(ledger)) == ("waiting", 0)


class OverconfidentStore(SqliteStore):
    """Broken on purpose: reports every snapshot as sealed with a key, so the loop never
    checks one against the log."""

    def restore(self, thread_id: str, codec: Codec) -> Restored:
        return replace(super().restore(thread_id, codec), keyed=True)


def test_without_a_key_a_resealed_snapshot_is_checked_against_the_log_before_a_tool_runs(
    openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path, ledger: Path
) -> None:
    assert resume_after_snapshot_edit(openai_server, tmp_path, cache, SqliteStore, True) == 0
    with deploybot(openai_server, tmp_path / "threads.db", cache) as rt:
        (info,) = rt.threads()
        with pytest.raises(BrokenLog, match="snapshot does not match its events"):
            rt.resume(info.id)


def test_the_resealed_snapshot_test_catches_a_loop_that_trusts_every_seal(
    openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path, ledger: Path
) -> None:
    assert resume_after_snapshot_edit(openai_server, tmp_path, cache, OverconfidentStore, True) == 1


# ---- edited events --------------------------------------------------------------------


def rechain(db: Path, thread_id: str, chain: Chain) -> None:
    """Recompute every hash and the row's seal as `chain` would: a forger's best effort."""
    with sqlite3.connect(db) as connection:
        num, reducer, version = connection.execute(
            "SELECT num, reducer, version FROM threads WHERE id = ?", (thread_id,)
        ).fetchone()
        rows = connection.execute(
            "SELECT seq, body FROM events WHERE thread = ? ORDER BY seq", (num,)
        ).fetchall()
        hashes = chain.links(chain.genesis(thread_id), [body for _, body in rows])
        for (seq, _), digest in zip(rows, hashes, strict=True):
            connection.execute(
                "UPDATE events SET hash = ? WHERE thread = ? AND seq = ?", (digest, num, seq)
            )
        pinned = () if version is None else (version,)  # the seal covers the version
        seal = chain.seal(thread_id, len(rows), hashes[-1], 1, reducer, *pinned)
        connection.execute(
            "UPDATE threads SET seq = ?, head_seal = ?, snapshot = NULL WHERE num = ?",
            (len(rows), seal, num),
        )


def forged_approval(db: Path, thread_id: str) -> Approved:
    """An approval of the thread's pending request, as a forger who read the row writes it."""
    with sqlite3.connect(db) as connection:
        (request,) = connection.execute(
            "SELECT request FROM threads WHERE id = ?", (thread_id,)
        ).fetchone()
    return Approved(step="approve_deploy", at="2026-01-01T00:00:00Z", by="mallory", request=request)


def insert_approval(db: Path, thread_id: str) -> None:
    approved = forged_approval(db, thread_id)
    with sqlite3.connect(db) as connection:
        num, seq = connection.execute(
            "SELECT num, seq FROM threads WHERE id = ?", (thread_id,)
        ).fetchone()
        connection.execute(
            "INSERT INTO events (thread, seq, body) VALUES (?, ?, ?)",
            (num, seq + 1, Codec().dumps_event(approved)),
        )
        connection.execute("UPDATE threads SET seq = ? WHERE num = ?", (seq + 1, num))


def edit_proposal(db: Path, thread_id: str) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute(
            "UPDATE events SET body = replace(body, 'v1.2.3', 'v1.2.2')"
            " WHERE body LIKE '%DeployBackend%'"
        )


def cut_last_event(db: Path, thread_id: str) -> None:
    with sqlite3.connect(db) as connection:
        num, seq = connection.execute(
            "SELECT num, seq FROM threads WHERE id = ?", (thread_id,)
        ).fetchone()
        connection.execute("DELETE FROM events WHERE thread = ? AND seq = ?", (num, seq))
        connection.execute("UPDATE threads SET seq = ? WHERE num = ?", (seq - 1, num))


@pytest.mark.parametrize("edit", [edit_proposal, insert_approval, cut_last_event])
def test_an_edited_log_refuses_to_load_and_runs_nothing(
    edit: Any, openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path, ledger: Path
) -> None:
    db = tmp_path / "threads.db"
    thread_id = waiting_for_approval(openai_server, db, cache)
    edit(db, thread_id)
    with deploybot(openai_server, db, cache) as rt, pytest.raises(BrokenLog, match="verify"):
        rt.resume(thread_id, approve=True)
    assert deploys(ledger) == 0

    # The CLI says so in one line and exits 1, for every command that loads the thread.
    for command in (["show", thread_id], ["resume", thread_id, "--approve"]):
        result = CliRunner().invoke(cli, [*command, "--db", str(db)])
        assert result.exit_code == 1, result.output
        assert result.output.count("\n") == 1 and "does not verify" in result.output
    assert deploys(ledger) == 0


@pytest.mark.parametrize("edit", [edit_proposal, insert_approval, cut_last_event])
def test_with_a_key_a_log_rechained_with_the_plain_hash_is_refused(
    edit: Any,
    openai_server: ScriptedOpenAI,
    tmp_path: Path,
    cache: Path,
    ledger: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWELVEFOLD_LOG_KEY", "a secret the attacker does not know")
    db = tmp_path / "threads.db"
    thread_id = waiting_for_approval(openai_server, db, cache)
    edit(db, thread_id)
    rechain(db, thread_id, Chain(None))
    with deploybot(openai_server, db, cache) as rt, pytest.raises(BrokenLog):
        rt.resume(thread_id)
    assert deploys(ledger) == 0


def test_without_a_key_the_chain_catches_edits_that_do_not_recompute_it(
    openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path, ledger: Path
) -> None:
    """The documented limit: without TWELVEFOLD_LOG_KEY someone who rewrites the hashes too
    is not stopped (the approval they forge is then in the log, as the rule says)."""
    db = tmp_path / "threads.db"
    thread_id = waiting_for_approval(openai_server, db, cache)
    insert_approval(db, thread_id)
    rechain(db, thread_id, Chain(None))
    ModelTurns(openai_server).then({"type": "DoneForNow", "message": "deployed"})
    with deploybot(openai_server, db, cache) as rt:
        assert rt.resume(thread_id).status == "finished"
        assert any(isinstance(e, Approved) and e.by == "mallory" for e in rt.events(thread_id))


def test_a_store_written_under_one_key_refuses_to_load_under_another(
    openai_server: ScriptedOpenAI,
    tmp_path: Path,
    cache: Path,
    ledger: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = tmp_path / "threads.db"
    thread_id = waiting_for_approval(openai_server, db, cache)
    monkeypatch.setenv("TWELVEFOLD_LOG_KEY", "set after the thread was written")
    with deploybot(openai_server, db, cache) as rt, pytest.raises(LogError, match="KEY"):
        rt.get(thread_id)


# ---- a changed agent ------------------------------------------------------------------

ASKING = """
agent changing "Asks a person twice, then finishes." {
  input string
  start first
}

human first {
  ask "Who are you?"
  next second
}

human second {
  ask "Where are you?"
  next done
}

final done
"""


def test_a_changed_agent_runs_a_thread_only_if_its_whole_log_replays(
    tmp_path: Path, cache: Path
) -> None:
    source = tmp_path / "changing.agent"
    source.write_text(ASKING)
    db = tmp_path / "threads.db"
    store = SqliteStore(db)
    rt = Runtime(store, notifier=RecordingNotifier(), cache_dir=tmp_path / "cache")
    old = rt.launch(source, "hello")
    old = rt.resume(old.id, answer="Ana", request=old.request)
    other = rt.launch(source, "hello again")
    store.close()

    # A wording change: the reducer is another, and the log still replays under it.
    source.write_text(ASKING.replace("Where are you?", "Where are you now?"))
    store = SqliteStore(db)
    rt = Runtime(store, notifier=RecordingNotifier(), cache_dir=tmp_path / "cache")
    assert rt.get(old.id).step == "second"
    assert rt.resume(old.id, answer="Lisbon", request=old.request).status == "finished"
    store.close()

    # A step renamed: the log of a thread that passed it no longer fits the new reducer.
    # A thread pinned to its version (docs/versions.md) runs on with the one it started
    # with; one that names no version (written before versions existed) is refused with
    # what changed, through the API and the CLI, and nothing is recorded.
    source.write_text(ASKING.replace("first", "name"))
    store = SqliteStore(db)
    rt = Runtime(store, notifier=RecordingNotifier(), cache_dir=tmp_path / "cache")
    assert rt.get(other.id).step == "first"
    unpin_all(db, other.id)  # as a twelvefold before versions wrote it
    with pytest.raises(AgentChanged, match="another version of agent changing"):
        rt.get(other.id)
    before = len(store.load(other.id, rt.agent(source).codec))
    result = CliRunner().invoke(
        cli,
        ["resume", other.id, "--answer", "Ana", "--request", str(other.request), "--db", str(db)],
        catch_exceptions=False,
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "another version of agent changing" in result.output
    assert len(store.load(other.id, rt.agent(source).codec)) == before
    store.close()


# ---- any hand edit: a thread may fail, a gated tool never runs unapproved ------------------

EDITS = st.lists(
    st.one_of(
        st.tuples(
            st.just("snapshot"),
            st.sampled_from(["deploy", "decide", "approve_deploy", "done"]),
            st.sampled_from(["running", "waiting", "finished"]),
            st.booleans(),  # re-seal it with the plain hash
        ),
        st.tuples(st.just("approve"), st.integers(0, 8), st.booleans()),  # insert, re-chain
        st.tuples(st.just("delete"), st.integers(0, 8), st.booleans()),  # delete, fix seq
        st.tuples(st.just("null hash"), st.integers(0, 8)),
        st.tuples(st.just("seq"), st.integers(-2, 2)),
        st.tuples(st.just("garbage snapshot"), st.booleans()),
        st.tuples(st.just("rechain")),
    ),
    min_size=1,
    max_size=3,
)


def apply_edit(db: Path, thread_id: str, edit: tuple[Any, ...], cache: Path) -> None:
    plain = Chain(None)
    with sqlite3.connect(db) as connection:
        num, seq = connection.execute(
            "SELECT num, seq FROM threads WHERE id = ?", (thread_id,)
        ).fetchone()
    kind = edit[0]
    if kind == "snapshot":
        _, step, status, reseal = edit
        with contextlib.suppress(ValueError, KeyError, TypeError):  # an earlier edit broke it
            edit_snapshot_state(db, thread_id, cache, step=step, status=status, notified=False)
        if reseal:
            reseal_snapshot(db, thread_id, plain)
    elif kind == "approve":
        _, at, again = edit
        approved = forged_approval(db, thread_id)
        with sqlite3.connect(db) as connection:
            position = min(at, seq) + 1
            connection.execute(
                "UPDATE events SET seq = seq + 1000 WHERE thread = ? AND seq >= ?", (num, position)
            )
            connection.execute(
                "UPDATE events SET seq = seq - 999 WHERE thread = ? AND seq >= 1000", (num,)
            )
            connection.execute(
                "INSERT INTO events (thread, seq, body) VALUES (?, ?, ?)",
                (num, position, Codec().dumps_event(approved)),
            )
            connection.execute("UPDATE threads SET seq = seq + 1 WHERE num = ?", (num,))
        if again:
            rechain(db, thread_id, plain)
    elif kind == "delete":
        _, at, fix = edit
        with sqlite3.connect(db) as connection:
            connection.execute("DELETE FROM events WHERE thread = ? AND seq = ?", (num, at + 1))
            if fix:
                connection.execute("UPDATE threads SET seq = seq - 1 WHERE num = ?", (num,))
    elif kind == "null hash":
        with sqlite3.connect(db) as connection:
            connection.execute(
                "UPDATE events SET hash = NULL WHERE thread = ? AND seq = ?", (num, edit[1] + 1)
            )
    elif kind == "seq":
        with sqlite3.connect(db) as connection:
            connection.execute("UPDATE threads SET seq = seq + ? WHERE num = ?", (edit[1], num))
    elif kind == "garbage snapshot":
        with sqlite3.connect(db) as connection:
            connection.execute("UPDATE threads SET snapshot = '{\"state\": [1, 2'")
        if edit[1]:
            reseal_snapshot(db, thread_id, plain)
    else:
        rechain(db, thread_id, plain)


def reseal_snapshot(db: Path, thread_id: str, chain: Chain) -> None:
    with sqlite3.connect(db) as connection:
        (text,) = connection.execute("SELECT snapshot FROM threads").fetchone()
        if text is not None:
            seal = chain.seal(thread_id, text)
            connection.execute("UPDATE threads SET snapshot_seal = ?", (seal,))


def approvals_stored(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        bodies = [row[0] for row in connection.execute("SELECT body FROM events")]
    return sum('"approved"' in body for body in bodies)


@pytest.mark.parametrize("key", [None, "the operator's key"])
def test_no_hand_edit_runs_the_gated_tool_without_an_approval_in_the_log(
    key: str | None,
    openai_server: ScriptedOpenAI,
    tmp_path: Path,
    cache: Path,
    ledger: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if key is not None:
        monkeypatch.setenv("TWELVEFOLD_LOG_KEY", key)
    template = tmp_path / "template.db"
    thread_id = waiting_for_approval(openai_server, template, cache)
    openai_server.responder = lambda body: Reply(
        arguments={"choice": {"type": "DoneForNow", "message": "done"}}
    )
    runs = iter(range(10_000))

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(edits=EDITS)
    def check(edits: list[tuple[Any, ...]]) -> None:
        db = tmp_path / f"edited-{next(runs)}.db"
        with sqlite3.connect(template) as source, sqlite3.connect(db) as target:
            source.backup(target)
        for edit in edits:
            apply_edit(db, thread_id, edit, cache)
        ledger.unlink(missing_ok=True)
        allowed = contextlib.suppress(LogError, IllegalEvent, StoreError)  # failing is allowed
        with deploybot(openai_server, db, cache) as rt, allowed:
            rt.resume(thread_id)
        if deploys(ledger):
            assert approvals_stored(db) > 0, f"deployed without an approval after {edits}"
            assert key is None, f"with a key, a forged log ran the tool after {edits}"

    check()
