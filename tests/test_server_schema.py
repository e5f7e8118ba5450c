"""schemathesis against a real `twelvefold serve` process: every operation of
/openapi.json with generated (valid and invalid) requests, as ana (an approver) with a
waiting thread to aim at. No response may be a server error, and every response must
match the schema the server publishes (status, content type, headers, body).

The SSE stream is left out: it is a long-lived response (its contract is tested in
test_server_api.py and test_server_e2e.py). `make test` runs a bounded number of examples
per operation (TWELVEFOLD_SCHEMA_EXAMPLES, 25 by default).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.support.openai_server import ScriptedOpenAI
from tests.support.serve_process import ServeProcess, json_of, make_token
from tests.support.server import deploy_project, deploy_responder
from tests.support.waiting import wait_for

EXAMPLES = int(os.environ.get("TWELVEFOLD_SCHEMA_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("schema")
    with ScriptedOpenAI(responder=deploy_responder) as model:
        project = folder / "project"
        deploy_project(project)
        db = folder / "threads.db"
        token = make_token(db, "ana")
        env = {
            "OPENAI_BASE_URL": model.base_url,
            "OPENAI_API_KEY": "test",
            "DEPLOYBOT_LEDGER": str(folder / "ledger.jsonl"),
        }
        server = ServeProcess([project], db, env, folder / "serve.log").start()
        try:
            with server.client(make_token(db, "bob")) as bob:
                view = json_of(bob.post("/v1/agents/deploybot/threads", json={"input": "go"}), 202)
                wait_for(
                    lambda: (
                        bob.get(f"/v1/threads/{view['thread_id']}").json()["status"] == "waiting"
                    ),
                    "a thread to wait",
                )
            yield {"server": server, "token": token, "thread": view["thread_id"]}
        finally:
            server.stop()
            log = (folder / "serve.log").read_text()
            assert "Traceback" not in log, log


def test_every_operation_answers_within_its_schema(live: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_url(f"{live['server'].url}/openapi.json")
    operations = [
        result.ok() for result in schema.exclude(path_regex="/stream$").get_all_operations()
    ]
    assert len(operations) >= 10
    headers = {"Authorization": f"Bearer {live['token']}"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def answers_within_the_schema(case: Any) -> None:
            case.call_and_validate(headers=headers)

        answers_within_the_schema()
