"""`twelvefold run` tells people through the channels the environment configures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import EXAMPLES
from tests.support.receivers import HttpReceiver
from twelvefold.cli import cli

CASSETTE = [
    {"agent": "deploybot", "step": "decide", "seq": 1, "type": "ListGitTags", "output": {}},
    {
        "agent": "deploybot",
        "step": "decide",
        "seq": 4,
        "type": "DeployBackend",
        "output": {"tag": "v1.2.3", "env": "production"},
    },
]


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
    (tmp_path / "deploy.jsonl").write_text("\n".join(json.dumps(e) for e in CASSETTE) + "\n")
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
