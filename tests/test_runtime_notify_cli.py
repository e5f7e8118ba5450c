"""`twelvefold run` tells people through the channels the environment configures."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import DEPLOY_CASSETTE, EXAMPLES, write_cassette
from tests.support.receivers import HttpReceiver, dead_port
from twelvefold.cli import cli
from twelvefold.commands.run import EXIT_UNTOLD
from twelvefold.runtime.timeouts import parse_time


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    listener = HttpReceiver()
    yield listener
    listener.server.shutdown()
    listener.server.server_close()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("TWELVEFOLD_DB", "TWELVEFOLD_NOTIFY_WEBHOOK", "TWELVEFOLD_NOTIFY_SLACK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("TWELVEFOLD_SMTP_HOST", raising=False)
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_LOG", "0")
    write_cassette(tmp_path / "deploy.jsonl", DEPLOY_CASSETTE[:2])
    return tmp_path


def run_deploybot() -> tuple[dict[str, object], str]:
    """`twelvefold run` up to the approval; the JSON view and the event lines."""
    agent = str(EXAMPLES / "deploybot.agent")
    args = ["run", agent, "--input", "deploy v1.2.3 to production", "--cassette", "deploy.jsonl"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    view = json.loads(result.output.splitlines()[-1])
    shown = CliRunner().invoke(cli, ["show", view["thread_id"]])
    return view, shown.output


def test_run_posts_the_approval_notice_to_the_configured_webhook(
    workdir: Path, receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_WEBHOOK", receiver.url("/hooks/approvals"))
    view, log = run_deploybot()
    assert (view["status"], view["step"]) == ("waiting", "approve_deploy")

    ((path, headers, _),) = receiver.received
    assert path == "/hooks/approvals"
    assert headers["Content-Type"] == "application/json"
    assert receiver.json() == {
        "thread_id": view["thread_id"],
        "agent": "deploybot",
        "step": "approve_deploy",
        "kind": "approval",
        "text": "Deploy v1.2.3 to production?",
        "value": {"tag": "v1.2.3", "env": "production"},
        "approvers": ["release-managers"],
        "request": "approve_deploy-5",
    }
    assert "notified      told webhook" in log  # the Notified event names the channel


def test_without_the_variable_nothing_is_posted(workdir: Path, receiver: HttpReceiver) -> None:
    view, log = run_deploybot()
    assert view["status"] == "waiting"
    assert receiver.received == []
    assert "told nobody" in log  # the log channel is off too, so no channel took it


def test_a_dead_channel_still_pauses_the_thread_and_run_says_who_was_not_told(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusing = HttpReceiver(status=500)
    port = dead_port()
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_LOG", "1")  # on: alone, it does not count
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_WEBHOOK", f"http://127.0.0.1:{port}/hooks/T0KEN")
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_SLACK", refusing.url("/services/T1/B2/SLACKTOKEN"))
    agent = str(EXAMPLES / "deploybot.agent")
    args = ["run", agent, "--input", "deploy v1.2.3 to production", "--cassette", "deploy.jsonl"]
    try:
        result = CliRunner().invoke(cli, args)
        as_json = CliRunner().invoke(cli, [*args, "--json"])
    finally:
        refusing.server.shutdown()
        refusing.server.server_close()

    assert result.exit_code == EXIT_UNTOLD, result.output
    (thread,) = re.findall(r"thread (\w+) \(deploybot\) waits at `approve_deploy`", result.output)
    hint = f"twelvefold resume {thread} --request approve_deploy-5 --by NAME --approve"
    assert hint in result.output
    stored = json.loads(CliRunner().invoke(cli, ["threads", "--json"]).output)
    assert {t["thread_id"]: t["status"] for t in stored}[thread] == "waiting"
    refusal = f"slack: POST to http://127.0.0.1:{refusing.server.server_address[1]} answered 500"
    assert f"webhook: POST to http://127.0.0.1:{port} failed: " in result.output
    assert refusal in result.output
    assert "twelvefold expire" in result.output
    for secret in ("T0KEN", "SLACKTOKEN", "/services/"):
        assert secret not in result.output and secret not in as_json.output

    assert as_json.exit_code == EXIT_UNTOLD
    view = json.loads(as_json.stdout.splitlines()[-1])
    assert (view["status"], view["notified"]) == ("waiting", False)
    assert [reason.split(":")[0] for reason in view["notice_failed"]] == ["webhook", "slack"]
    shown = CliRunner().invoke(cli, ["show", view["thread_id"]]).output
    assert "told log; failed webhook, slack" in shown


def test_run_prints_the_thread_it_started_even_when_nobody_could_be_told(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_WEBHOOK", f"http://127.0.0.1:{dead_port()}/hook")
    agent = str(EXAMPLES / "deploybot.agent")
    args = ["run", agent, "--input", "deploy v1.2.3 to production", "--cassette", "deploy.jsonl"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == EXIT_UNTOLD, result.output
    (listed,) = json.loads(CliRunner().invoke(cli, ["threads", "--json"]).output)
    assert f"thread {listed['thread_id']} (deploybot) waits at `approve_deploy`" in result.output
    assert f"warning: thread {listed['thread_id']} waits but no notice reached anyone" in (
        result.stderr
    )


def test_expire_retries_the_notice_and_says_so_until_the_channel_is_back(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = HttpReceiver(status=500)
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_WEBHOOK", receiver.url("/hooks/T0KEN"))
    agent = str(EXAMPLES / "deploybot.agent")
    args = ["run", agent, "--input", "deploy v1.2.3 to production", "--cassette", "deploy.jsonl"]
    runner = CliRunner()
    try:
        launched = runner.invoke(cli, [*args, "--json"])
        assert launched.exit_code == EXIT_UNTOLD, launched.output
        thread = json.loads(launched.stdout.splitlines()[-1])["thread_id"]
        log = json.loads(runner.invoke(cli, ["show", thread, "--json"]).output)["log"]
        tried = parse_time(log[-1]["at"])

        early = runner.invoke(cli, ["expire", "--now", (tried + timedelta(seconds=30)).isoformat()])
        assert (early.exit_code, len(receiver.received)) == (0, 1), early.output  # backoff
        again = tried + timedelta(minutes=1)
        failed = runner.invoke(cli, ["expire", "--now", again.isoformat()])
        assert failed.exit_code == EXIT_UNTOLD, failed.output
        port = receiver.server.server_address[1]
        assert failed.stdout.splitlines()[-1] == (
            f"thread {thread}: notice about `approve_deploy` tried again, nobody was told: "
            f"webhook: POST to http://127.0.0.1:{port} answered 500"
        )
        receiver.status = 200
        back = runner.invoke(cli, ["expire", "--now", (again + timedelta(minutes=2)).isoformat()])
        assert back.exit_code == 0, back.output
        assert back.stdout.splitlines()[-1].endswith("tried again, told webhook")
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
    assert len(receiver.received) == 3
    assert all("T0KEN" not in out for out in (launched.output, failed.output, back.output))
    view = json.loads(runner.invoke(cli, ["show", thread, "--json"]).output)
    assert (view["status"], view["notified"]) == ("waiting", True)
