"""Messages that say what moves a thread on when a person's decision cannot: a thread that
waits for an outside event or for its sub-agent is named with the command that works (no
empty `()` where an `ask` would be), a request that belongs to a child thread is named as
the child's, and a store URL in a hint can be pasted back (no starred password in it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import EXAMPLES, ScriptedModel, no_messages
from twelvefold.cli import cli
from twelvefold.commands.serve import _option
from twelvefold.runtime.api import RequestNotPending, Runtime
from twelvefold.runtime.schema import SchemaBehind
from twelvefold.runtime.store import SqliteStore, StoreUrl, shown_url

WAITS = """
agent waits { input string start hold }
type Paid { amount: int }
wait hold for Paid { next done }
final done(Paid)
"""


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_a_decision_for_a_thread_that_waits_for_an_event_names_the_send(tmp_path: Path) -> None:
    (tmp_path / "waits.agent").write_text(WAITS)
    db = str(tmp_path / "t.db")
    with Runtime(SqliteStore(tmp_path / "t.db"), cache_dir=tmp_path / "c") as rt:
        view = rt.launch(tmp_path / "waits.agent", "hi")
    for decision in (["--approve"], ["--answer", "yes", "--request", "hold-1"]):
        code, out = invoke("resume", view.id, *decision, "--db", db)
        assert code == 1, out
        assert "()" not in out
        assert "waits at `hold` for an event Paid, not a person's decision" in out
        assert f"`twelvefold send {view.id} Paid JSON --request {view.request}`" in out


@pytest.fixture
def family(tmp_path: Path) -> tuple[Path, str, str, str]:
    """A returns thread waiting for its refunds child, which waits for an approval."""
    shutil.copy(EXAMPLES / "returns.agent", tmp_path / "returns.agent")
    shutil.copytree(EXAMPLES / "returns", tmp_path / "returns")
    (tmp_path / "twelvefold.toml").write_text('[approvers]\nsupport-leads = ["ana"]\n')
    store = SqliteStore(tmp_path / "t.db")
    with Runtime(store, model=ScriptedModel([]), messages=no_messages, cache_dir=tmp_path) as rt:
        parent = rt.launch(
            tmp_path / "returns.agent",
            {"order_id": "o-1", "email": "ana@example.com", "amount_cents": 1200},
        )
        child = rt.get(parent.child or "")
    assert child.request is not None
    return tmp_path / "t.db", parent.id, child.id, child.request


def test_a_childs_request_named_on_the_parent_is_sent_to_the_child(
    family: tuple[Path, str, str, str],
) -> None:
    db, parent, child, request = family
    code, out = invoke("resume", parent, "--approve", "--request", request, "--db", str(db))
    assert code == 1, out
    command = f"twelvefold resume {child} --request {request} --approve"
    assert f"request `{request}` belongs to thread {child}, the sub-agent thread {parent}" in out
    assert f"`{command}`" in out
    # The command it shows is the one that works.
    code, out = invoke(*command.split()[1:], "--db", str(db))
    assert code == 0, out
    code, out = invoke("show", parent, "--db", str(db), "--json")
    assert code == 0 and '"step": "await_parcel"' in out, out


def test_a_decision_without_a_request_for_a_parent_names_its_child(
    family: tuple[Path, str, str, str],
) -> None:
    db, parent, child, _ = family
    code, out = invoke("resume", parent, "--approve", "--db", str(db))
    assert code == 1, out
    assert "()" not in out
    assert f"waits at `refund` for its sub-agent, thread {child}" in out
    assert f"`twelvefold show {child}`" in out
    with Runtime(SqliteStore(db), cache_dir=db.parent) as rt, pytest.raises(RequestNotPending):
        rt.resume(parent, approve=True, request="refund-9")


def test_a_store_url_in_a_hint_can_be_pasted_back() -> None:
    secret = "postgresql://bob:S3cretPw@db.example:5432/threads?sslmode=require"
    option, note = _option(StoreUrl(secret))
    assert option == "--store postgresql://bob@db.example:5432/threads?sslmode=require"
    assert "PGPASSWORD" in note
    assert _option(StoreUrl("postgresql://bob@db.example/threads")) == (
        "--store postgresql://bob@db.example/threads",
        "",
    )
    told = str(SchemaBehind(shown_url(secret), 1))
    assert "S3cretPw" not in told
    assert "`twelvefold db upgrade --store postgresql://bob@db.example:5432/threads?sslmode" in told
    assert "--store postgresql://bob:***@" not in told


def test_the_cli_fork_of_a_parent_shows_the_forks_own_child(
    family: tuple[Path, str, str, str],
) -> None:
    db, parent, child, _ = family
    code, out = invoke("fork", parent, "--at", "4", "--db", str(db), "--json")
    assert code == 0, out
    forked = json.loads(out)
    assert forked["child"] == f"{forked['thread_id']}~{forked['request']}" != child
    code, out = invoke("fork", parent, "--at", "4", "--db", str(db))
    assert code == 0 and "waits at `refund` for its sub-agent" in out, out
    assert "  child: thread " in out and child not in out.split("child: thread ")[1]


def test_a_failed_sub_agent_thread_points_to_its_parent_not_to_a_retry_refused(
    family: tuple[Path, str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A red team: a failed child's view said `retry: twelvefold resume CHILD --retry`,
    which is then refused (its parent's `agent` step took its end: `ChildSettled`)."""
    from dataclasses import replace

    from twelvefold.commands.run import print_view
    from twelvefold.runtime.types import ErrorInfo

    db, parent, child, _ = family
    with Runtime(SqliteStore(db), cache_dir=db.parent) as rt:
        view = rt.get(child)
    failed = replace(view, status="failed", error=ErrorInfo("Interrupted", "cut short"))
    print_view(failed, db)
    out = capsys.readouterr().out
    assert f"twelvefold resume {child} --retry" not in out
    assert f"twelvefold show {parent}" in out
