"""`/metrics` on a real `twelvefold serve` process (docs/observability.md, "Metrics"):
the real openai client against the scripted model server, SQLite, tokens made with
`twelvefold token create`. The text is read with prometheus_client's own parser, an
implementation of the format we did not write; the numbers are checked against the
threads' own logs over the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.openai_server import ScriptedOpenAI
from tests.support.serve_process import ServeProcess, json_of, launch_waiting, make_token
from tests.support.server import DEPLOY_CONFIG, deploy_project, deploy_responder
from tests.support.waiting import wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def project(tmp_path: Path, openai_server: ScriptedOpenAI) -> Path:
    openai_server.responder = deploy_responder
    deploy_project(tmp_path / "project")
    return tmp_path / "project"


@pytest.fixture
def server(project: Path, tmp_path: Path, openai_server: ScriptedOpenAI) -> Iterator[ServeProcess]:
    env = {
        "OPENAI_BASE_URL": openai_server.base_url,
        "OPENAI_API_KEY": "test",
        "DEPLOYBOT_LEDGER": str(tmp_path / "ledger.jsonl"),
        "TWELVEFOLD_DB": "",
    }
    db = tmp_path / "threads.db"
    make_token(db, "bob")  # the store exists before the server opens it
    served = ServeProcess([project], db, env, tmp_path / "serve.log").start()
    yield served
    served.stop()


def scrape(response: httpx.Response) -> Samples:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_threads_tokens_cost_and_waits_as_the_logs_do(
    server: ServeProcess, tmp_path: Path
) -> None:
    token = make_token(tmp_path / "threads.db", "bob")
    with server.client(token) as bob:
        threads = [view["thread_id"] for view in launch_waiting(bob, 2)]
        samples = scrape(bob.get("/metrics"))
        logs = [json_of(bob.get(f"/v1/threads/{t}/events")) for t in threads]

    assert value(samples, "twelvefold_threads", agent="deploybot", status="waiting") == 2
    assert value(samples, "twelvefold_threads", agent="deploybot", status="finished") == 0
    model_events = [e for log in logs for e in log if e["kind"] == "model_output"]
    tokens_in = sum(e["usage"]["input_tokens"] for e in model_events)
    tokens_out = sum(e["usage"]["output_tokens"] for e in model_events)
    cost = sum(e["usage"]["cost_usd"] for e in model_events)
    mini = {"agent": "deploybot", "model": "gpt-4o-mini"}
    assert value(samples, "twelvefold_model_tokens_total", direction="input", **mini) == tokens_in
    assert value(samples, "twelvefold_model_tokens_total", direction="output", **mini) == tokens_out
    assert value(samples, "twelvefold_model_cost_usd_total", **mini) == pytest.approx(cost)
    tools = sum(1 for log in logs for e in log if e["kind"] == "tool_result")
    llm = {"agent": "deploybot", "kind": "llm"}
    assert value(samples, "twelvefold_step_latency_seconds_count", **llm) == len(model_events)
    tool = {"agent": "deploybot", "kind": "tool"}
    assert value(samples, "twelvefold_step_latency_seconds_count", **tool) == tools
    assert value(samples, "twelvefold_oldest_pending_request_age_seconds", agent="deploybot") >= 0
    assert ("twelvefold_oldest_pending_request_age_seconds",
            frozenset({("agent", "deploybot")})) in samples  # fmt: skip
    assert value(samples, "twelvefold_runs_in_flight") == 0
    assert value(samples, "twelvefold_lease_takeovers_total") == 0


def test_metrics_need_a_token_unless_the_configuration_makes_them_public(
    server: ServeProcess, project: Path
) -> None:
    with server.client(None) as anonymous:
        refused = anonymous.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert (
            anonymous.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        )
        (project / "twelvefold.toml").write_text(DEPLOY_CONFIG + '\n[server]\nmetrics = "public"\n')
        scrape(anonymous.get("/metrics"))  # read at each scrape: no restart
        (project / "twelvefold.toml").write_text(DEPLOY_CONFIG + '\n[server]\nmetrics = "open"\n')
        # Broken, the configuration cannot say the metrics are public: a token is needed,
        # and only a caller with one learns why (the path is in the server's log too).
        refused = anonymous.get("/metrics")
        assert refused.status_code == 401 and str(project) not in refused.text
    with server.client(make_token(server.db, "bob")) as bob:
        broken = bob.get("/metrics")
        assert broken.status_code == 503 and "server.metrics" in broken.json()["detail"]
    wait_for(lambda: "server.metrics" in server.log.read_text(), "the reason in the log")


def test_with_readers_only_a_reader_of_every_agent_reads_the_metrics(
    server: ServeProcess, project: Path
) -> None:
    """/metrics shows each agent's counts and costs: with `readers` set, a token holder
    outside them is refused (403), as the threads themselves are hidden from them."""
    (project / "twelvefold.toml").write_text(
        DEPLOY_CONFIG + '\n[server]\nreaders = ["release-managers"]\n'
    )
    with server.client(make_token(server.db, "bob")) as bob:
        refused = bob.get("/metrics")
        assert refused.status_code == 403, refused.text
        assert "readers" in refused.json()["detail"] and "deploybot" not in refused.text
    with server.client(make_token(server.db, "ana")) as ana:
        scrape(ana.get("/metrics"))


def test_a_forks_copied_events_count_nowhere_as_new(server: ServeProcess, tmp_path: Path) -> None:
    """`POST /fork` copies a log: its model calls, tool calls and `started` were counted
    when the thread they came from recorded them. Only the fork's own `forked` counts."""
    token = make_token(tmp_path / "threads.db", "ana")  # a release manager: may fork
    with server.client(token) as ana:
        (thread,) = [view["thread_id"] for view in launch_waiting(ana, 1)]
        before = scrape(ana.get("/metrics"))
        log = json_of(ana.get(f"/v1/threads/{thread}/events"))
        for _ in range(2):
            forked = ana.post(f"/v1/threads/{thread}/fork", json={"at": len(log) - 1})
            assert forked.status_code == 201, forked.text
        after = scrape(ana.get("/metrics"))
    counted = {
        key: after[key] - before.get(key, 0.0)
        for key in after
        if key[0].endswith("_total") and after[key] != before.get(key, 0.0)
    }
    forks = ("twelvefold_events_total", frozenset({("agent", "deploybot"), ("kind", "forked")}))
    assert counted.pop(forks) == 2
    # A fork at a pause gets its own notice (`notified`): new, and counted.
    assert all(dict(labels).get("kind") == "notified" for _, labels in counted), counted
