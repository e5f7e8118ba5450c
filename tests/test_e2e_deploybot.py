"""examples/deploybot.agent end to end: its real tools and prompt, the real openai +
instructor client against the scripted OpenAI-compatible server on loopback, SQLite.

The deploy tool writes each deploy to DEPLOYBOT_LEDGER (keyed by its idempotency key), so
the ledger says what really ran, and when.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_helpers import EXAMPLES, RecordingNotifier
from tests.support.e2e import ModelTurns
from tests.support.openai_server import Reply, ScriptedOpenAI
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.types import Approved, ModelOutput, Rejected, StepFailed, ToolStarted

DEPLOYBOT = EXAMPLES / "deploybot.agent"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("DEPLOYBOT_LEDGER", str(path))
    monkeypatch.delenv("DEPLOYBOT_TAGS", raising=False)
    return path


def deploys(ledger: Path) -> list[dict[str, str]]:
    if not ledger.exists():
        return []
    return [json.loads(line) for line in ledger.read_text().splitlines()]


def newest_listed_tag(seen: str) -> dict[str, Any]:
    """What a model does after list_tags: deploy the newest tag the tool listed."""
    match = re.search(r"<list_tags_result>\s*tags:\s*\[?\s*-?\s*\"?([\w.]+)", seen)
    assert match, f"no list_tags_result in the model's context:\n{seen}"
    return {"type": "DeployBackend", "tag": match.group(1), "env": "production"}


def report_the_url(seen: str) -> dict[str, Any]:
    match = re.search(r"url: (\S+)", seen)
    assert match, f"no deploy_result url in the model's context:\n{seen}"
    return {"type": "DoneForNow", "message": f"deployed: {match.group(1)}"}


def test_a_production_deploy_waits_for_approval_then_runs(
    rt: Runtime, model: ModelTurns, ledger: Path, notifier: RecordingNotifier
) -> None:
    model.then({"type": "ListGitTags"}, newest_listed_tag, report_the_url)
    view = rt.launch(DEPLOYBOT, "deploy the latest build to production")

    assert (view.status, view.step, view.waiting_for) == ("waiting", "approve_deploy", "approval")
    assert view.question == "Deploy v1.2.3 to production?"
    assert deploys(ledger) == [], "the deploy tool must not run before the approval"
    assert not any(isinstance(e, ToolStarted) and e.step == "deploy" for e in rt.events(view.id))
    (notice,) = notifier.notices
    assert (notice.kind, notice.approvers) == ("approval", ("release-managers",))

    done = rt.resume(view.id, request=view.request, approve=True, comment="go", by="ana")
    assert done.status == "finished"
    assert done.output.message == "deployed: https://production.deploybot.example/releases/v1.2.3"
    (deploy,) = deploys(ledger)
    started = next(
        e for e in rt.events(view.id) if isinstance(e, ToolStarted) and e.step == "deploy"
    )
    assert deploy == {"key": started.key, "tag": "v1.2.3", "env": "production"}
    events = rt.events(view.id)
    approved_at = next(i for i, e in enumerate(events) if isinstance(e, Approved))
    assert approved_at < events.index(started), "the deploy ran only after the approval"


def test_a_rejected_deploy_never_runs_and_the_comment_reaches_the_model(
    rt: Runtime, model: ModelTurns, ledger: Path
) -> None:
    def follow_the_comment(seen: str) -> dict[str, Any]:
        assert "freeze on production; use staging" in seen, seen
        return {"type": "DeployBackend", "tag": "v1.2.3", "env": "staging"}

    model.then(
        {"type": "DeployBackend", "tag": "v1.2.3", "env": "production"},
        follow_the_comment,
        report_the_url,
    )
    view = rt.launch(DEPLOYBOT, "deploy v1.2.3 to production")
    assert view.step == "approve_deploy"

    done = rt.resume(
        view.id,
        request=view.request,
        reject=True,
        comment="freeze on production; use staging",
        by="carol",
    )
    assert done.status == "finished"
    assert done.output.message == "deployed: https://staging.deploybot.example/releases/v1.2.3"
    assert [(d["tag"], d["env"]) for d in deploys(ledger)] == [("v1.2.3", "staging")]
    rejected = next(e for e in rt.events(view.id) if isinstance(e, Rejected))
    assert (rejected.by, rejected.comment) == ("carol", "freeze on production; use staging")
    assert "<approve_deploy_rejected>" in model.contexts[1]
    assert "<approve_deploy_rejected>" not in model.contexts[0]


def test_three_failed_deploys_in_a_row_escalate_to_a_person(
    rt: Runtime, model: ModelTurns, ledger: Path, notifier: RecordingNotifier
) -> None:
    def retry_after_seeing(failures: int) -> Any:
        def turn(seen: str) -> dict[str, Any]:
            assert seen.count("<deploy_error>") == failures, seen
            return {"type": "DeployBackend", "tag": "v9.9.9", "env": "staging"}

        return turn

    def take_the_advice(seen: str) -> dict[str, Any]:
        assert "<escalate_answer>" in seen and "deploy v1.2.2" in seen, seen
        return {"type": "DeployBackend", "tag": "v1.2.2", "env": "staging"}

    model.then(
        retry_after_seeing(0),
        retry_after_seeing(1),
        retry_after_seeing(2),
        take_the_advice,
        report_the_url,
    )
    view = rt.launch(DEPLOYBOT, "deploy v9.9.9 to staging")

    assert (view.status, view.step, view.waiting_for) == ("waiting", "escalate", "answer")
    assert (
        view.question == "deploybot is stuck after repeated failures. Please take over or advise."
    )
    failures = [e for e in rt.events(view.id) if isinstance(e, StepFailed)]
    assert [(f.step, f.error.type) for f in failures] == [("deploy", "LookupError")] * 3
    assert "no tag 'v9.9.9'" in failures[0].error.message
    assert deploys(ledger) == []
    assert [n.step for n in notifier.notices] == ["escalate"]

    done = rt.resume(
        view.id, request=view.request, answer="v9.9.9 does not exist; deploy v1.2.2", by="ops"
    )
    assert done.status == "finished"
    assert [(d["tag"], d["env"]) for d in deploys(ledger)] == [("v1.2.2", "staging")]


def test_malformed_output_is_re_asked_with_the_validation_error(
    rt: Runtime, model: ModelTurns, openai_server: ScriptedOpenAI
) -> None:
    model.then(
        Reply(arguments={"choice": {"type": "DeployBackend", "tag": "v1.2.3", "env": "prod"}}),
        {"type": "DeployBackend", "tag": "v1.2.3", "env": "production"},
    )
    view = rt.launch(DEPLOYBOT, "deploy v1.2.3 to prod")

    assert (view.status, view.step) == ("waiting", "approve_deploy")
    first, second = openai_server.requests
    # The re-ask is the first request, the model's bad tool call, and the error about it.
    assert second["messages"][: len(first["messages"])] == first["messages"]
    call, error = second["messages"][len(first["messages"]) :]
    assert (
        call["role"] == "assistant"
        and '"env": "prod"' in call["tool_calls"][0]["function"]["arguments"]
    )
    assert error["role"] == "tool" and error["tool_call_id"] == call["tool_calls"][0]["id"]
    assert "choice.DeployBackend.env" in error["content"]
    assert "Input should be 'staging' or 'production'" in error["content"]
    # One model call from the thread's point of view: the re-ask is inside it.
    outputs = [e for e in rt.events(view.id) if isinstance(e, ModelOutput)]
    assert len(outputs) == 1 and outputs[0].output.env == "production"
