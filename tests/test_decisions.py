"""Issue 8, items 1, 2 and 5: a decision applies to exactly the request it was made on,
only approvers decide, a fork never re-uses a decision, and a cancelled thread takes no
more decisions.

A refund agent (written per test, with its own configuration beside it) runs through the
real openai + instructor client against the scripted server on loopback and stores its
threads in SQLite. The refund tool writes each refund it makes to a ledger file, so the
ledger says what really ran.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import RecordingNotifier
from tests.support.e2e import ModelTurns
from tests.support.openai_server import ScriptedOpenAI
from twelvefold.cli import cli
from twelvefold.compiler import compile_file
from twelvefold.runtime.api import (
    InputError,
    NotAnApprover,
    RequestNotPending,
    Runtime,
    UnenforcedApprovers,
)
from twelvefold.runtime.loop import INTERRUPTED
from twelvefold.runtime.types import (
    Answer,
    Answered,
    Approved,
    Cancelled,
    Forked,
    IllegalEvent,
    Rejected,
    Retried,
    StepFailed,
    ToolStarted,
)

REFUNDS_AGENT = """\
agent refunds "Refunds orders; every refund needs a person's approval." {
  input string
  max_steps 40
  start decide
}

type IssueRefund "Refund an order." { order: string, amount: float }
type Done "Report the outcome." { message: string }
type Receipt { order: string, amount: float }

llm decide -> IssueRefund | Done {
  prompt "refunds/decide.j2"
  on IssueRefund -> approve_refund
  on Done -> done
}

approval approve_refund(IssueRefund) {
  ask "Refund {{ amount }} on order {{ order }}?"
  approvers "cfo"
  on approved -> refund
  on rejected -> decide
}

tool refund(IssueRefund) -> Receipt = "refund_tools:issue_refund" {
  requires approval
  next decide
}

final done(Done)
"""

REFUND_TOOLS = '''\
"""The refund agent's tool: it records every refund it makes in REFUND_LEDGER."""

import json
import os


def issue_refund(request, idempotency_key):
    with open(os.environ["REFUND_LEDGER"], "a") as ledger:
        entry = {"key": idempotency_key, "order": request.order, "amount": request.amount}
        ledger.write(json.dumps(entry) + "\\n")
    return {"order": request.order, "amount": request.amount}
'''


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@dataclass
class Shop:
    """The refund agent's folder, its configuration file and the refunds ledger."""

    agent: Path
    config: Path
    ledger: Path

    def approvers(self, table: str) -> None:
        """Write the configuration's approvers (TOML lines under [approvers])."""
        self.config.write_text(f"[approvers]\n{table}\n")

    def refunds(self) -> list[tuple[str, float]]:
        if not self.ledger.exists():
            return []
        lines = self.ledger.read_text().splitlines()
        return [(e["order"], e["amount"]) for e in map(json.loads, lines)]


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shop:
    folder = tmp_path / "shop"
    (folder / "prompts" / "refunds").mkdir(parents=True)
    (folder / "prompts" / "refunds" / "decide.j2").write_text("Refund.\n\n{{ context }}\n")
    (folder / "refunds.agent").write_text(REFUNDS_AGENT)
    (folder / "refund_tools.py").write_text(REFUND_TOOLS)
    ledger = tmp_path / "refunds.jsonl"
    monkeypatch.setenv("REFUND_LEDGER", str(ledger))
    made = Shop(folder / "refunds.agent", folder / "twelvefold.toml", ledger)
    made.approvers('cfo = ["carol"]')
    return made


def refund(order: str, amount: float) -> dict[str, Any]:
    return {"type": "IssueRefund", "order": order, "amount": amount}


DONE = {"type": "Done", "message": "done"}


# ---- CLI helpers ---------------------------------------------------------------------------


@pytest.fixture
def cli_env(
    openai_server: ScriptedOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The environment a CLI process needs to reach the scripted model and the store."""
    env = {
        "OPENAI_BASE_URL": openai_server.base_url,
        "OPENAI_API_KEY": "test",
        "TWELVEFOLD_DB": str(tmp_path / "threads.db"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def twelvefold(*arguments: str) -> tuple[int, str, str]:
    """The CLI in this process (not a terminal): exit code, stdout, stderr."""
    result = CliRunner().invoke(cli, list(arguments))
    return result.exit_code, result.stdout, result.stderr


# ---- 1. a decision is bound to its request --------------------------------------------------


def test_a_late_approval_made_on_one_refund_never_runs_another(
    rt: Runtime, model: ModelTurns, shop: Shop
) -> None:
    model.then(refund("A1", 5), refund("B2", 5000), DONE)
    first = rt.launch(shop.agent, "refund my orders")
    assert (first.status, first.question) == ("waiting", "Refund 5.0 on order A1?")
    a1 = first.request
    assert a1 is not None

    second = rt.resume(first.id, request=a1, reject=True, comment="not this one", by="carol")
    assert (second.step, second.question) == ("approve_refund", "Refund 5000.0 on order B2?")
    assert second.request not in (None, a1), "a new wait at the same step is a new request"

    # The late approve was decided on A1's text: it must not run B2's 5000 refund.
    with pytest.raises(RequestNotPending, match=f"pending request is `{second.request}`"):
        rt.resume(first.id, request=a1, approve=True, by="carol")
    assert rt.get(first.id).seq == second.seq, "a refused decision records nothing"
    assert shop.refunds() == []

    # The reducer refuses it too, whoever records it (defense in depth).
    thread = rt.get(first.id)
    module = rt.agent(shop.agent).module
    stale = Approved(step="approve_refund", request=a1, by="carol")
    with pytest.raises(IllegalEvent, match=f"the pending request is `{second.request}`"):
        module.reduce(thread.state, stale)

    done = rt.resume(first.id, request=second.request, approve=True, by="carol")
    assert done.status == "finished"
    assert shop.refunds() == [("B2", 5000.0)]
    approved = next(e for e in rt.events(first.id) if isinstance(e, Approved))
    assert (approved.request, approved.by, approved.via) == (second.request, "carol", "api")
    assert approved.config == f"{shop.config}#{_digest(shop.config)}"

    # A redelivered (double-clicked) approve of the request that was decided: refused.
    with pytest.raises(RequestNotPending, match="no request is pending"):
        rt.resume(first.id, request=second.request, approve=True, by="carol")
    assert shop.refunds() == [("B2", 5000.0)]


def test_a_redelivered_approval_does_not_approve_the_next_request_at_the_same_step(
    rt: Runtime, model: ModelTurns, shop: Shop
) -> None:
    # After the first refund the model proposes another: the thread waits at the same
    # step again, so an approval delivered twice would otherwise approve the second one.
    model.then(refund("A1", 5), refund("C3", 700), DONE)
    view = rt.launch(shop.agent, "refund")
    again = rt.resume(view.id, request=view.request, approve=True, by="carol")
    assert (again.step, again.question) == ("approve_refund", "Refund 700.0 on order C3?")
    with pytest.raises(RequestNotPending, match=f"`{view.request}` .* no longer pending"):
        rt.resume(view.id, request=view.request, approve=True, by="carol")
    assert shop.refunds() == [("A1", 5.0)]


def test_the_cli_names_the_request_and_refuses_a_decision_without_it(
    rt: Runtime, model: ModelTurns, shop: Shop, cli_env: dict[str, str]
) -> None:
    model.then(refund("A1", 5), DONE)
    code, out, err = twelvefold("run", str(shop.agent), "--input", "refund", "--json")
    assert code == 0, err
    view = json.loads(out.splitlines()[-1])
    request = view["request"]
    assert request == "approve_refund-2" and view["waiting_for"] == "approval"

    code, out, _ = twelvefold("show", view["thread_id"], "--json")
    assert json.loads(out)["request"] == request
    code, out, _ = twelvefold("threads", "--json")
    assert [t["request"] for t in json.loads(out)] == [request]
    code, out, _ = twelvefold("threads")
    assert out.splitlines()[1].split()[-1] == request

    # No terminal and no --request: refused, naming the pending request.
    code, out, err = twelvefold("resume", view["thread_id"], "--approve", "--by", "carol")
    assert code == 1 and f"--request {request}" in err and "Traceback" not in err
    code, out, err = twelvefold(
        "resume", view["thread_id"], "--approve", "--by", "carol", "--request", "approve_refund-9"
    )
    assert code == 1 and f"the pending request is `{request}`" in err
    code, out, err = twelvefold(
        "resume", view["thread_id"], "--approve", "--by", "carol", "--request", "\x1b[2J\nx"
    )
    assert code == 1 and "\x1b" not in err and "`\\x1b[2J\\nx`" in err
    assert rt.get(view["thread_id"]).seq == view["events"] and shop.refunds() == []

    code, out, err = twelvefold(
        "resume", view["thread_id"], "--approve", "--by", "carol", "--request", request
    )
    assert code == 0, err
    assert shop.refunds() == [("A1", 5.0)]
    approved = next(e for e in rt.events(view["thread_id"]) if isinstance(e, Approved))
    assert approved.via is not None and approved.via.startswith("cli (os user ")


def on_a_terminal(
    command: list[str], typed: str, env: dict[str, str], cwd: Path
) -> tuple[int, str]:
    """Run `command` with a pseudo-terminal as stdin and stdout, `typed` already typed."""
    main, secondary = os.openpty()
    process = subprocess.Popen(
        command, stdin=secondary, stdout=secondary, stderr=secondary, env=env, cwd=cwd
    )
    os.close(secondary)
    os.write(main, typed.encode())
    shown = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the process exited and closed its side
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    return process.wait(timeout=120), shown.decode(errors="replace")


def test_at_a_terminal_the_pending_request_is_shown_and_confirmed(
    rt: Runtime, model: ModelTurns, shop: Shop, cli_env: dict[str, str], tmp_path: Path
) -> None:
    model.then(refund("B2", 5000), DONE)
    view = rt.launch(shop.agent, "refund")
    command = [sys.executable, "-m", "twelvefold", "resume", view.id, "--approve", "--by", "carol"]
    env = {**os.environ, **cli_env, "REFUND_LEDGER": str(shop.ledger)}

    code, shown = on_a_terminal(command, "n\n", env, tmp_path)
    assert (
        code == 1 and f"request {view.request}" in shown and "Refund 5000.0 on order B2?" in shown
    )
    assert '"order": "B2"' in shown and "nothing was decided" in shown
    assert rt.get(view.id).seq == view.seq and shop.refunds() == []

    code, shown = on_a_terminal(command, "y\n", env, tmp_path)
    assert code == 0, shown
    assert shop.refunds() == [("B2", 5000.0)]
    approved = next(e for e in rt.events(view.id) if isinstance(e, Approved))
    assert approved.request == view.request


def test_at_a_terminal_a_hostile_value_cannot_redraw_the_question_being_confirmed(
    rt: Runtime, model: ModelTurns, shop: Shop, cli_env: dict[str, str], tmp_path: Path
) -> None:
    # The order comes from the model: terminal escapes in it (erase the line, go back to
    # its start, print something else) must not rewrite what the person confirms.
    disguised = "B2\x1b[2K\rRefund 5.0 on order A1?\x1b[8m"
    model.then(refund(disguised, 5000))
    view = rt.launch(shop.agent, "refund")
    command = [sys.executable, "-m", "twelvefold", "resume", view.id, "--approve", "--by", "carol"]
    env = {**os.environ, **cli_env, "REFUND_LEDGER": str(shop.ledger)}
    code, shown = on_a_terminal(command, "n\n", env, tmp_path)
    assert code == 1 and "nothing was decided" in shown
    assert "\x1b" not in shown and "\r" not in shown.replace("\r\n", "\n")
    assert re.search(r"order B2\\(x1b|u001b)\[2K\\(r|u000d)Refund 5.0 on order A1\?", shown)
    assert rt.get(view.id).seq == view.seq and shop.refunds() == []


def test_the_printed_hint_and_the_notice_name_the_request(
    rt: Runtime, model: ModelTurns, shop: Shop, cli_env: dict[str, str]
) -> None:
    model.then(refund("A1", 5))
    code, out, err = twelvefold("run", str(shop.agent), "--input", "refund")
    assert code == 0, err
    assert "--request approve_refund-2 --by NAME --approve" in out
    assert "twelvefold resume" in err and "--request approve_refund-2" in err  # the log notice


def test_the_terminal_shows_the_value_decided_even_when_the_ask_shows_none(
    rt: Runtime, model: ModelTurns, shop: Shop, cli_env: dict[str, str]
) -> None:
    # `ask "Refund it?"` names no field: a person deciding from `run`'s output or the
    # log notice must still see the order and the amount they approve.
    shop.agent.write_text(
        REFUNDS_AGENT.replace("Refund {{ amount }} on order {{ order }}?", "Refund it?")
    )
    model.then(refund("B2\x1b[2J", 5000))
    code, out, err = twelvefold("run", str(shop.agent), "--input", "refund")
    assert code == 0, err
    shown = '  value: {"order": "B2\\u001b[2J", "amount": 5000.0}'
    assert "for approval: Refund it?\n" + shown + "\n" in out
    assert "Refund it?\n" + shown + "\n" in err  # the log notice
    assert "\x1b" not in out + err


def test_two_processes_deciding_one_request_exactly_one_lands(
    rt: Runtime, model: ModelTurns, shop: Shop, cli_env: dict[str, str], tmp_path: Path
) -> None:
    # The model proposes a second refund after the first, so a decision that landed
    # twice would approve it.
    model.then(refund("A1", 5), refund("C3", 700), DONE)
    view = rt.launch(shop.agent, "refund")
    command = [
        sys.executable, "-m", "twelvefold", "resume", view.id, "--approve", "--by", "carol",
        "--request", str(view.request),
    ]  # fmt: skip
    env = {**os.environ, **cli_env, "REFUND_LEDGER": str(shop.ledger)}
    racers = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = [(p.wait(timeout=120), p.communicate()[1]) for p in racers]
    assert sorted(code for code, _ in outcomes) == [0, 1], outcomes
    loser = next(err for code, err in outcomes if code == 1)
    assert "Traceback" not in loser
    assert shop.refunds() == [("A1", 5.0)]
    assert sum(isinstance(e, Approved) for e in rt.events(view.id)) == 1
    assert rt.get(view.id).question == "Refund 700.0 on order C3?"


def test_a_retried_wait_is_a_new_request(tmp_path: Path) -> None:
    agent = tmp_path / "asker.agent"
    agent.write_text(
        "agent asker { input string start question }\n"
        'human question { ask "Which order?" timeout 1h next done }\n'
        "final done\n"
    )
    with Runtime(notifier=RecordingNotifier(), cache_dir=tmp_path / "cache") as rt:
        view = rt.launch(agent, "hi")
        assert view.request == "question-1"
        thread = rt.agent(agent)
        failed = thread.module.reduce(
            view.state, StepFailed(step="question", error=INTERRUPTED)
        )  # as a timeout records it
        assert (failed.status, failed.request) == ("failed", None)
        retried = thread.module.reduce(failed, Retried(step="question"))
        assert (retried.status, retried.request, retried.notified) == (
            "waiting",
            "question-4",
            False,
        )
        with pytest.raises(IllegalEvent, match="the pending request is `question-4`"):
            thread.module.reduce(
                retried, Answered(step="question", answer=Answer(text="A1"), request="question-1")
            )


# ---- 2. only approvers decide -----------------------------------------------------------------


def test_only_a_member_of_the_approvers_group_decides(
    rt: Runtime, model: ModelTurns, shop: Shop, cli_env: dict[str, str]
) -> None:
    model.then(refund("B2", 5000), DONE)
    view = rt.launch(shop.agent, "refund")
    request = str(view.request)
    for by in (["--by", "intern"], []):
        code, _, err = twelvefold("resume", view.id, "--approve", "--request", request, *by)
        assert code == 1 and "only by a member of cfo" in err, err
    with pytest.raises(NotAnApprover):
        rt.resume(view.id, request=request, reject=True, comment="no", by="intern")
    assert rt.get(view.id).seq == view.seq and shop.refunds() == []

    code, _, err = twelvefold("resume", view.id, "--approve", "--request", request, "--by", "carol")
    assert code == 0, err
    assert shop.refunds() == [("B2", 5000.0)]


def test_a_revoked_approver_is_refused_at_once(rt: Runtime, model: ModelTurns, shop: Shop) -> None:
    model.then(refund("B2", 5000), DONE)
    view = rt.launch(shop.agent, "refund")
    shop.approvers('cfo = ["dave"]')  # carol leaves; the same runtime keeps running
    with pytest.raises(NotAnApprover, match="`carol` is not one"):
        rt.resume(view.id, request=view.request, approve=True, by="carol")
    assert shop.refunds() == []
    done = rt.resume(view.id, request=view.request, approve=True, by="dave")
    assert done.status == "finished" and shop.refunds() == [("B2", 5000.0)]
    approved = next(e for e in rt.events(view.id) if isinstance(e, Approved))
    assert approved.config == f"{shop.config}#{_digest(shop.config)}"


def test_a_configuration_that_cannot_be_read_refuses_the_decision(
    rt: Runtime, model: ModelTurns, shop: Shop, cli_env: dict[str, str]
) -> None:
    model.then(refund("B2", 5000))
    view = rt.launch(shop.agent, "refund")
    shop.config.write_text("[approvers\ncfo = 'carol'\n")
    code, _, err = twelvefold(
        "resume", view.id, "--approve", "--request", str(view.request), "--by", "carol"
    )
    assert code == 1 and "cannot check who may decide" in err and "not valid TOML" in err
    assert "Traceback" not in err and rt.get(view.id).seq == view.seq


def test_a_group_no_configuration_defines_is_accepted_with_a_loud_warning(
    rt: Runtime, model: ModelTurns, shop: Shop, cli_env: dict[str, str]
) -> None:
    model.then(refund("A1", 5), DONE)
    shop.approvers('finance = ["carol"]')  # no `cfo`
    view = rt.launch(shop.agent, "refund")
    code, _, err = twelvefold(
        "resume", view.id, "--approve", "--request", str(view.request), "--by", "anyone"
    )
    assert code == 0, err
    assert "WARNING" in err and "cfo" in err and "NOT checked" in err
    assert shop.refunds() == [("A1", 5.0)]


def test_the_python_api_warns_about_an_unenforced_group(
    rt: Runtime, model: ModelTurns, shop: Shop
) -> None:
    model.then(refund("A1", 5), DONE)
    shop.config.unlink()
    view = rt.launch(shop.agent, "refund")
    with pytest.warns(UnenforcedApprovers, match="cfo"):
        rt.resume(view.id, request=view.request, approve=True)
    assert shop.refunds() == [("A1", 5.0)]


def test_check_warns_about_a_group_the_configuration_does_not_define(shop: Shop) -> None:
    def w510(path: Path) -> list[str]:
        found = compile_file(path, generate_code=False).diagnostics
        return [d.message for d in found if d.code == "W510"]

    assert w510(shop.agent) == []  # cfo = ["carol"]
    shop.approvers('finance = ["carol"]')
    assert w510(shop.agent) == ["approvers group `cfo` is not defined in twelvefold.toml"]
    shop.config.unlink()  # no configuration at all: nothing to check against
    assert w510(shop.agent) == []


# ---- 5. forks -----------------------------------------------------------------------------


def test_a_fork_just_after_an_approval_waits_for_a_new_one(
    rt: Runtime, model: ModelTurns, shop: Shop
) -> None:
    model.then(refund("B2", 5000), DONE)
    view = rt.launch(shop.agent, "refund")
    rt.resume(view.id, request=view.request, approve=True, by="carol")
    assert shop.refunds() == [("B2", 5000.0)]
    events = rt.events(view.id)
    approved_at = next(i for i, e in enumerate(events, 1) if isinstance(e, Approved))

    fork = rt.fork(view.id, approved_at)
    forked = rt.resume(fork)  # go on without a decision
    assert (forked.status, forked.step) == ("waiting", "approve_refund")
    assert forked.request not in (None, view.request)
    assert shop.refunds() == [("B2", 5000.0)], "the approved refund must not run again"
    log = rt.events(fork)
    assert not any(isinstance(e, Approved) for e in log)
    assert isinstance(log[approved_at - 1], Forked) and log[approved_at - 1].parent == view.id

    # The parent's request cannot decide the fork's.
    with pytest.raises(RequestNotPending):
        rt.resume(fork, request=view.request, approve=True, by="carol")


def test_a_fork_at_a_pause_gets_its_own_request_and_notice(
    rt: Runtime, model: ModelTurns, shop: Shop, notifier: Any
) -> None:
    model.then(refund("A1", 5))
    view = rt.launch(shop.agent, "refund")
    assert [n.request for n in notifier.notices] == [view.request]

    fork = rt.fork(view.id, view.seq)  # the log ends with the parent's `notified`
    copy = rt.get(fork)
    assert copy.status == "waiting" and copy.request not in (None, view.request)
    assert not copy.state.notified, "the parent's notice does not count for the fork"
    rt.resume(fork)  # tells people about the fork's own request
    assert [n.request for n in notifier.notices] == [view.request, copy.request]
    assert [n.thread_id for n in notifier.notices] == [view.id, fork]


def test_a_fork_between_an_approved_call_s_start_and_its_result_asks_again(
    rt: Runtime, model: ModelTurns, shop: Shop, cli_env: dict[str, str]
) -> None:
    # The call in flight is the one the parent's approval let run: the fork neither runs
    # it nor records it interrupted; it copies the events before the approval and asks.
    model.then(refund("A1", 5), DONE)
    view = rt.launch(shop.agent, "refund")
    rt.resume(view.id, request=view.request, approve=True, by="carol")
    events = rt.events(view.id)
    approved_at = next(i for i, e in enumerate(events, 1) if isinstance(e, Approved))
    started_at = next(i for i, e in enumerate(events, 1) if isinstance(e, ToolStarted))

    code, out, err = twelvefold("fork", view.id, "--at", str(started_at), "--json")
    assert code == 0, err
    fork = json.loads(out)
    assert (fork["status"], fork["step"], fork["forked_from"]) == (
        "waiting",
        "approve_refund",
        view.id,
    )
    log = rt.events(fork["thread_id"])
    assert isinstance(log[-1], Forked) and log[-1].parent_seq == approved_at - 1
    assert not any(isinstance(e, Approved | ToolStarted | StepFailed) for e in log)
    assert rt.resume(fork["thread_id"]).status == "waiting"
    assert shop.refunds() == [("A1", 5.0)]


FLAKY_REFUND_TOOLS = REFUND_TOOLS.replace(
    "    with open(",
    '    declined = os.environ["REFUND_LEDGER"] + ".decline"\n'
    "    if os.path.exists(declined):  # the payment provider declines once\n"
    "        os.unlink(declined)\n"
    '        raise RuntimeError("payment declined")\n'
    "    with open(",
)


def test_a_fork_just_after_a_retry_does_not_run_the_approved_tool_again(
    rt: Runtime, model: ModelTurns, shop: Shop, cli_env: dict[str, str]
) -> None:
    # The approved refund is declined once; a person retries the same call (its key) and
    # it runs. A fork that ends just after that `retried` must not run the refund again
    # on the strength of the parent's retry and approval: it asks for an approval.
    declined_once(shop)
    model.then(refund("B2", 5000), DONE, DONE)
    view = rt.launch(shop.agent, "refund")
    failed = rt.resume(view.id, request=view.request, approve=True, by="carol")
    assert failed.status == "failed" and shop.refunds() == []
    assert rt.retry(view.id, by="carol", reuse_key=True).status == "finished"
    assert shop.refunds() == [("B2", 5000.0)]
    events = rt.events(view.id)
    retried_at = next(i for i, e in enumerate(events, 1) if isinstance(e, Retried))

    code, out, err = twelvefold("fork", view.id, "--at", str(retried_at), "--json")
    assert code == 0, err
    fork = json.loads(out)
    assert (fork["status"], fork["step"]) == ("waiting", "approve_refund")
    assert rt.resume(fork["thread_id"]).status == "waiting"
    assert shop.refunds() == [("B2", 5000.0)], "the fork ran the refund on the parent's retry"
    log = rt.events(fork["thread_id"])
    assert not any(isinstance(e, Retried | ToolStarted | Approved) for e in log)

    # The fork's own approval is a person's decision, recorded in the fork's own log.
    fork_view = rt.get(fork["thread_id"])
    approved = rt.resume(fork_view.id, request=fork_view.request, approve=True, by="carol")
    assert approved.status == "finished"
    assert shop.refunds() == [("B2", 5000.0), ("B2", 5000.0)]
    assert len(set(refund_keys(shop))) == 2


def test_a_fork_point_outside_the_log_is_a_clear_error(
    rt: Runtime, model: ModelTurns, shop: Shop, cli_env: dict[str, str]
) -> None:
    model.then(refund("A1", 5))
    view = rt.launch(shop.agent, "refund")
    with pytest.raises(InputError, match="from 1 to"):
        rt.fork(view.id, view.seq + 1)
    code, _, err = twelvefold("fork", view.id, "--at", "0")
    assert code == 1 and "from 1 to" in err


# ---- cancel -------------------------------------------------------------------------------


def test_a_cancelled_thread_takes_no_more_decisions(
    rt: Runtime, model: ModelTurns, shop: Shop, cli_env: dict[str, str]
) -> None:
    model.then(refund("B2", 5000))
    view = rt.launch(shop.agent, "refund")
    code, out, err = twelvefold(
        "cancel", view.id, "--reason", "customer withdrew", "--by", "ops", "--json"
    )
    assert code == 0, err
    cancelled = json.loads(out)
    assert (cancelled["status"], cancelled["request"]) == ("cancelled", None)
    last = rt.events(view.id)[-1]
    assert isinstance(last, Cancelled)
    assert (last.by, last.reason) == ("ops", "customer withdrew")
    assert last.via is not None and last.via.startswith("cli (os user ")

    code, _, err = twelvefold(
        "resume", view.id, "--approve", "--by", "carol", "--request", str(view.request)
    )
    assert code == 1 and "no request is pending" in err
    with pytest.raises(RequestNotPending):
        rt.resume(view.id, request=view.request, approve=True, by="carol")
    module = rt.agent(shop.agent).module
    with pytest.raises(IllegalEvent, match="cancelled"):
        module.reduce(rt.get(view.id).state, Rejected(step="approve_refund", request=None))
    with pytest.raises(IllegalEvent, match="has been cancelled already: there is nothing"):
        rt.cancel(view.id, reason="again")
    code, _, err = twelvefold("cancel", view.id, "--reason", "again")
    assert code == 1
    assert (
        err == f"error: thread {view.id} has been cancelled already: there is nothing to cancel\n"
    )
    code, _, err = twelvefold("resume", view.id, "--retry")
    assert code == 1
    assert err == (
        f"error: thread {view.id} has been cancelled; only a failed thread can be retried\n"
    )
    assert shop.refunds() == []
    code, out, _ = twelvefold("threads", "--status", "cancelled", "--json")
    assert [t["thread_id"] for t in json.loads(out)] == [view.id]


def test_a_cancellation_says_why(
    rt: Runtime, model: ModelTurns, shop: Shop, cli_env: dict[str, str]
) -> None:
    model.then(refund("B2", 5000))
    view = rt.launch(shop.agent, "refund")
    for reason in ("", "  \n"):
        code, _, err = twelvefold("cancel", view.id, "--reason", reason)
        assert code == 1 and "say why" in err and "Traceback" not in err
    with pytest.raises(InputError, match="say why"):
        rt.cancel(view.id, reason="")
    assert rt.get(view.id).status == "waiting" and rt.get(view.id).seq == view.seq


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# ---- 5b. an approval lets exactly one call run (red team rt5, t27) --------------------------


def declined_once(shop: Shop) -> None:
    """The refund tool of `shop` is declined by the payment provider the next time only."""
    (shop.agent.parent / "flaky_refund_tools.py").write_text(FLAKY_REFUND_TOOLS)
    shop.agent.write_text(REFUNDS_AGENT.replace('"refund_tools:', '"flaky_refund_tools:'))
    Path(f"{shop.ledger}.decline").write_text("once")


def refund_keys(shop: Shop) -> list[str]:
    lines = shop.ledger.read_text().splitlines() if shop.ledger.exists() else []
    return [json.loads(line)["key"] for line in lines]


def test_no_fork_of_a_failed_approved_call_runs_it_without_a_new_approval(
    rt: Runtime, model: ModelTurns, shop: Shop
) -> None:
    # carol approves a refund; the provider declines it (the thread fails at the tool).
    # A fork at any point from the approval on, driven as far as anyone can without a
    # decision (retried when failed, resumed otherwise), must never run the refund on the
    # parent's approval: it waits at the approval with a request of its own.
    declined_once(shop)
    model.then(refund("B2", 5000), DONE)
    view = rt.launch(shop.agent, "refund")
    failed = rt.resume(view.id, request=view.request, approve=True, by="carol")
    assert (failed.status, failed.step) == ("failed", "refund") and shop.refunds() == []
    events = rt.events(view.id)
    approved_at = next(i for i, e in enumerate(events, 1) if isinstance(e, Approved))

    forks = []
    for at in range(approved_at, len(events) + 1):
        fork = rt.fork(view.id, at)
        if rt.get(fork).status == "failed":
            rt.retry(fork, by="carol")
        driven = rt.resume(fork)
        assert (driven.status, driven.step) == ("waiting", "approve_refund"), at
        assert driven.request not in (None, view.request)
        assert shop.refunds() == [], f"a fork at event {at} ran the refund on the parent's approval"
        forks.append(fork)

    # A fork of a fork asks again too; its own approval runs the refund once, new key.
    twice = rt.fork(forks[-1], len(rt.events(forks[-1])))
    assert rt.get(twice).status == "waiting" and shop.refunds() == []
    pending = rt.get(forks[-1])
    done = rt.resume(forks[-1], request=pending.request, approve=True, by="carol")
    assert done.status == "finished" and shop.refunds() == [("B2", 5000.0)]
    grandchild = rt.fork(forks[-1], len(rt.events(forks[-1])) - 1)  # just after the result
    assert shop.refunds() == [("B2", 5000.0)]
    assert rt.get(grandchild).step == "decide"  # a call that ended: nothing is asked again


def test_a_retry_of_a_failed_approved_call_asks_again_unless_it_reuses_the_key(
    rt: Runtime, model: ModelTurns, shop: Shop
) -> None:
    # An approval approves the one call a person saw. A retry with a new key is a new
    # call: the thread goes back to the approval (a new request). A retry that reuses
    # the failed call's key is the same call and runs on the same approval.
    declined_once(shop)
    model.then(refund("B2", 5000), DONE, refund("C3", 7), DONE)
    view = rt.launch(shop.agent, "refund")
    failed = rt.resume(view.id, request=view.request, approve=True, by="carol")
    assert failed.status == "failed"
    first_key = next(e.key for e in rt.events(view.id) if isinstance(e, ToolStarted))

    again = rt.retry(view.id, by="carol")
    assert (again.status, again.step) == ("waiting", "approve_refund")
    assert again.request not in (None, view.request) and shop.refunds() == []
    retried = [e for e in rt.events(view.id) if isinstance(e, Retried)]
    assert [r.approval for r in retried] == ["approve_refund"]
    done = rt.resume(view.id, request=again.request, approve=True, by="carol")
    assert done.status == "finished" and shop.refunds() == [("B2", 5000.0)]
    assert refund_keys(shop)[0] != first_key, "the new approval's call has a key of its own"

    Path(f"{shop.ledger}.decline").write_text("once")
    other = rt.launch(shop.agent, "refund")
    assert rt.resume(other.id, request=other.request, approve=True, by="carol").status == "failed"
    key = [e.key for e in rt.events(other.id) if isinstance(e, ToolStarted)][-1]
    assert rt.retry(other.id, by="carol", reuse_key=True).status == "finished"
    assert refund_keys(shop)[-1] == key and shop.refunds()[-1] == ("C3", 7.0)


def test_the_reducer_refuses_a_retry_that_skips_the_approval_it_names(
    rt: Runtime, model: ModelTurns, shop: Shop
) -> None:
    # `Retried.approval` goes back only to an approval whose `on approved` leads to the
    # failed step, and only for a new call (no key).
    declined_once(shop)
    model.then(refund("B2", 5000))
    view = rt.launch(shop.agent, "refund")
    rt.resume(view.id, request=view.request, approve=True, by="carol")
    state = rt.get(view.id).state
    module = rt.agent(shop.agent).module
    with pytest.raises(IllegalEvent, match="no `on approved`"):
        module.reduce(state, Retried(step="refund", approval="decide"))
    with pytest.raises(IllegalEvent, match="new call"):
        module.reduce(state, Retried(step="refund", approval="approve_refund", key="k"))
    back = module.reduce(state, Retried(step="refund", approval="approve_refund"))
    assert (back.step, back.status, back.value) == ("approve_refund", "waiting", state.value)
