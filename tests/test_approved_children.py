"""An approval lets exactly one call run, also when that call is a sub-agent (red team rt6).

`parent`'s approval leads into an `agent` step; its child sleeps (a timer), waits for an
outside event, asks a question or asks an approval of its own, then calls a tool with a
side effect. A fork of the child made after the parent's approval was a thread that woke by
itself (the timer sweep, `expire`, an event, an answer) and ran the child's tool a second
time on the one approval, with nobody retrying it. Now a sub-agent's thread that an
approval let run (at any depth) cannot be forked: the parent can, and its fork asks anew.

The tool writes each call to a side-effect log, so the log says what really ran.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import ScriptedModel, no_messages
from twelvefold.cli import cli
from twelvefold.runtime.api import ApprovedWork, Runtime
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.types import Retried

PARENT = """
agent parent "Approves, then runs a child." {{ input Req max_steps 20 start ask }}
type Req {{ n: int }}
type Count {{ n: int }}
approval ask(Req) {{
  ask "Run the child for {{{{ n }}}}?"
  on approved -> kid
  on rejected -> nope
}}
agent kid(Req) -> Count = "{child}.agent" {{ next done }}
final done(Count)
final nope
"""

UNGATED = """
agent plain "Runs a child, no approval." { input Req max_steps 20 start kid }
type Req { n: int }
type Count { n: int }
agent kid(Req) -> Count = "sleeper.agent" { next done }
final done(Count)
"""

MIDDLE = """
agent middle "Runs the sleeper." { input Req max_steps 20 start kid }
type Req { n: int }
type Count { n: int }
agent kid(Req) -> Count = "sleeper.agent" { next done }
final done(Count)
"""

COMMON = """
type Req { n: int }
type Count { n: int }
tool go(Req) -> Count = "side:go" { next done }
final done(Count)
"""

CHILDREN = {
    "sleeper": "agent sleeper { input Req max_steps 20 start nap }\nsleep nap(Req) 1h next go\n",
    "waiter": "agent waiter { input Req max_steps 20 start hold }\n"
    "wait hold(Req) for Req { next go }\n",
    "asker": "agent asker { input Req max_steps 20 start q }\n"
    'human q(Req) { ask "Go?" next fine }\n'
    'tool fine(Answer) -> Req = "side:fine" { next go }\n',
    "gated": "agent gated { input Req max_steps 20 start inner }\n"
    'approval inner(Req) { ask "Go {{ n }}?" on approved -> go on rejected -> done2 }\n'
    "final done2(Req)\n",
}

SIDE = """
import os
from pathlib import Path


def go(value, idempotency_key):
    with Path(os.environ["SIDE_LOG"]).open("a") as out:
        out.write(idempotency_key + "\\n")
    return {"n": value.n}


def fine(value):
    return {"n": 1}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "proj"
    folder.mkdir()
    for name, body in CHILDREN.items():
        (folder / f"{name}.agent").write_text(body + COMMON)
        (folder / f"p_{name}.agent").write_text(
            PARENT.format(child=name).replace("agent parent ", f"agent p_{name} ")
        )
    (folder / "plain.agent").write_text(UNGATED)
    (folder / "middle.agent").write_text(MIDDLE)
    (folder / "p_middle.agent").write_text(
        PARENT.format(child="middle").replace("agent parent ", "agent p_middle ")
    )
    (folder / "side.py").write_text(SIDE)
    monkeypatch.setenv("SIDE_LOG", str(tmp_path / "side.log"))
    monkeypatch.setenv("TWELVEFOLD_DB", str(tmp_path / "t.db"))
    return folder


@pytest.fixture
def rt(tmp_path: Path, project: Path) -> Iterator[Runtime]:
    runtime = Runtime(
        SqliteStore(tmp_path / "t.db"),
        model=ScriptedModel([]),
        messages=no_messages,
        cache_dir=tmp_path / "cache",
    )
    yield runtime
    runtime.close()


def side_effects(project: Path) -> list[str]:
    log = project.parent / "side.log"
    return log.read_text().splitlines() if log.exists() else []


def approved_child(rt: Runtime, project: Path, child: str) -> tuple[str, str]:
    """Launch `p_CHILD`, approve it: the parent waits for its child, which waits."""
    view = rt.launch(project / f"p_{child}.agent", {"n": 1})
    after = rt.resume(view.id, request=view.request, approve=True, by="carol")
    assert (after.status, after.step) == ("waiting", "kid"), after
    assert after.child is not None
    assert rt.get(after.child).status == "waiting"
    return view.id, after.child


def wake_everything(rt: Runtime, thread: str) -> None:
    """Whatever anyone can do to a waiting thread without a new approval of the parent."""
    rt.expire("2100-01-01T00:00:00Z")  # the sleep's timer, long past
    view = rt.get(thread)
    if view.waiting_for == "event":
        rt.send(thread, "Req", {"n": 2})
    elif view.waiting_for == "answer":
        rt.resume(thread, request=view.request, answer="yes", by="carol")
    elif view.waiting_for == "approval":
        rt.resume(thread, request=view.request, approve=True, by="dave")
    rt.resume(thread)


@pytest.mark.parametrize("child", ["sleeper", "waiter", "asker", "gated"])
def test_the_child_an_approval_let_run_cannot_be_forked(
    rt: Runtime, project: Path, child: str
) -> None:
    parent, kid = approved_child(rt, project, child)
    for at in range(1, len(rt.events(kid)) + 1):
        with pytest.raises(ApprovedWork, match=f"Fork thread {parent} instead"):
            rt.fork(kid, at)
    assert len(rt.threads()) == 2  # nothing was made

    # The child itself runs once, when what it waits for comes; the parent finishes.
    wake_everything(rt, kid)
    assert len(side_effects(project)) == 1
    assert rt.get(parent).status == "finished"
    with pytest.raises(ApprovedWork):  # a finished child's fork would run it all again
        rt.fork(kid, 1)
    assert len(side_effects(project)) == 1


def test_a_grandchild_under_an_approved_child_cannot_be_forked(rt: Runtime, project: Path) -> None:
    parent, middle = approved_child(rt, project, "middle")
    grandchild = rt.get(middle).child
    assert grandchild is not None and rt.get(grandchild).waiting_for == "timer"
    with pytest.raises(ApprovedWork, match=f"thread {parent}"):
        rt.fork(grandchild, 1)
    with pytest.raises(ApprovedWork):
        rt.fork(middle, 1)
    rt.expire("2100-01-01T00:00:00Z")
    assert len(side_effects(project)) == 1 and rt.get(parent).status == "finished"


def test_the_parent_s_fork_asks_the_approval_anew(rt: Runtime, project: Path) -> None:
    parent, _ = approved_child(rt, project, "sleeper")
    fork = rt.fork(parent, len(rt.events(parent)))
    view = rt.get(fork)
    assert (view.status, view.step, view.child) == ("waiting", "ask", None)
    rt.expire("2100-01-01T00:00:00Z")  # the original's child wakes and runs, once
    assert (rt.resume(fork).status, rt.get(fork).step) == ("waiting", "ask")
    assert len(side_effects(project)) == 1 and rt.get(parent).status == "finished"


def test_a_child_no_approval_led_to_is_forked_as_before(rt: Runtime, project: Path) -> None:
    view = rt.launch(project / "plain.agent", {"n": 1})
    assert view.child is not None
    fork = rt.fork(view.child, 1)
    assert rt.get(fork).waiting_for == "timer"
    rt.expire("2100-01-01T00:00:00Z")
    assert len(side_effects(project)) == 2  # the child and its fork: no approval involved


def test_the_cli_says_why_in_one_line(rt: Runtime, project: Path) -> None:
    parent, kid = approved_child(rt, project, "sleeper")
    result = CliRunner().invoke(cli, ["fork", kid, "--at", "1", "--json"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert f"twelvefold fork {parent} --at" in result.stderr
    result = CliRunner().invoke(cli, ["expire", "--now", "2100-01-01T00:00:00Z", "--json"])
    assert result.exit_code == 0, result.output
    assert len(side_effects(project)) == 1
    assert len(json.loads(CliRunner().invoke(cli, ["threads", "--json"]).stdout)) == 2


# ---- a retry that keeps the key of a keyless approved call (red team rt6) -------------------

KEYLESS = """
agent keyless "Approves, then calls a tool that takes no key." { input Req max_steps 20 start ask }
type Req { n: int }
type Count { n: int }
approval ask(Req) {
  ask "Run it for {{ n }}?"
  on approved -> go
  on rejected -> nope
}
tool go(Req) -> Count = "flaky:go" { requires approval next done }
final done(Count)
final nope
"""

FLAKY = """
import os
from pathlib import Path


def go(value{key}):
    log = Path(os.environ["SIDE_LOG"])
    with log.open("a") as out:
        out.write("ran\\n")
    if (log.parent / "FAIL").exists():
        raise RuntimeError("downstream unavailable")
    return {{"n": value.n}}
"""


@pytest.mark.parametrize("takes_key", [False, True])
def test_keeping_the_key_of_a_keyless_approved_call_is_refused(
    rt: Runtime, project: Path, takes_key: bool
) -> None:
    # The tool does its work, then raises. Keeping the key makes a retry the same call
    # only for a tool that can see the key: a keyless one would do its work again on the
    # one approval, as often as someone retries.
    (project / "keyless.agent").write_text(KEYLESS)
    (project / "flaky.py").write_text(FLAKY.format(key=", idempotency_key" if takes_key else ""))
    (project.parent / "FAIL").write_text("")
    view = rt.launch(project / "keyless.agent", {"n": 1})
    failed = rt.resume(view.id, request=view.request, approve=True, by="carol")
    assert (failed.status, failed.step) == ("failed", "go") and len(side_effects(project)) == 1
    if takes_key:  # the tool sees the key: the same call, on the same approval
        assert rt.retry(view.id, by="ana", reuse_key=True).status == "failed"
        assert len(side_effects(project)) == 2
        return
    seq = rt.get(view.id).seq
    for _ in range(3):
        with pytest.raises(ApprovedWork, match="takes no idempotency key"):
            rt.retry(view.id, by="ana", reuse_key=True)
    assert rt.get(view.id).seq == seq and len(side_effects(project)) == 1  # nothing recorded
    result = CliRunner().invoke(cli, ["resume", view.id, "--retry", "--reuse-key"])
    assert result.exit_code == 1 and "Traceback" not in result.stderr, result.output
    assert "without reusing the key" in result.stderr and len(side_effects(project)) == 1

    # Without the key, the retry is a new call: it goes back to the approval.
    again = rt.retry(view.id, by="ana")
    assert (again.status, again.step) == ("waiting", "ask")
    assert len(side_effects(project)) == 1


@pytest.mark.parametrize("takes_key", [False, True])
def test_a_keyless_approved_call_of_unknown_outcome_asks_again_on_retry(
    rt: Runtime, project: Path, takes_key: bool
) -> None:
    # The tool does its work, then returns a result of the wrong shape: the outcome is
    # unknown, the call keeps its key. For a tool that sees the key, a retry is the same
    # call (it can do its work once per key). A keyless one would do it again, on the
    # one approval, at every retry: the retry goes back to the approval instead.
    (project / "keyless.agent").write_text(KEYLESS)
    flaky = FLAKY.format(key=", idempotency_key" if takes_key else "")
    (project / "flaky.py").write_text(
        flaky.replace('raise RuntimeError("downstream unavailable")', 'return {"nope": 1}')
    )
    (project.parent / "FAIL").write_text("")
    view = rt.launch(project / "keyless.agent", {"n": 1})
    failed = rt.resume(view.id, request=view.request, approve=True, by="carol")
    assert (failed.status, failed.step) == ("failed", "go") and len(side_effects(project)) == 1
    assert failed.state.retry_key is not None
    again = rt.retry(view.id, by="ana")
    if takes_key:
        assert (again.status, again.step) == ("failed", "go")
        assert len(side_effects(project)) == 2
        return
    assert (again.status, again.step) == ("waiting", "ask") and len(side_effects(project)) == 1
    (retried,) = [e for e in rt.events(view.id) if isinstance(e, Retried)]
    assert (retried.key, retried.approval) == (failed.state.retry_key, "ask")
    (project.parent / "FAIL").unlink()
    done = rt.resume(view.id, request=again.request, approve=True, by="dave")
    assert done.status == "finished" and len(side_effects(project)) == 2
