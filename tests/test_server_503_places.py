"""A 503 from a real `twelvefold serve` names neither where the server keeps its files nor
which database it uses, and points at the server's log line that does.

Found by a red team (rt18): a `twelvefold.toml` left invalid mid-save answered every call
with its absolute path and no log reference (the policy and the metrics' reader built
their 503 from the error's words, around `unavailable_detail`); a PostgreSQL store's 503
showed the database's name and the URL's parameters, and each call waited the pool's 30 s
while the database could not be reached, whatever the URL's `connect_timeout` said.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.serve_process import ServeProcess, make_token
from tests.support.server import deploy_project

ENV = {"OPENAI_API_KEY": "test", "TWELVEFOLD_DB": ""}
REFERENCE = re.compile(r"\(the server's log has more, under reference ([0-9a-f]{8})\)$")


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[ServeProcess]]:
    servers: list[ServeProcess] = []
    yield servers
    for server in servers:
        server.stop()


def unavailable(response: httpx.Response, log: Path, *, hidden: list[str]) -> str:
    """The 503's detail, checked: none of `hidden` in it, and a reference to a line of the
    server's log that holds the whole error (the first of `hidden` too)."""
    assert response.status_code == 503, response.text
    detail: str = response.json()["detail"]
    for secret in hidden:
        assert secret not in detail, (secret, detail)
    found = REFERENCE.search(detail)
    assert found is not None, detail
    [logged] = [line for line in log.read_text().splitlines() if found[1] in line]
    assert hidden[0] in logged, logged
    return detail


def test_a_configuration_broken_mid_save_is_a_503_without_its_path(
    tmp_path: Path, started: list[ServeProcess]
) -> None:
    """Every call's 503 (the policy's, the metrics') cuts the file's path to its name."""
    project = tmp_path / "secret-operator-dir" / "agents"
    deploy_project(project, "[server]\nmetrics = 'token'\n")
    db, log = tmp_path / "threads.db", tmp_path / "serve.log"
    token = make_token(db, "ana")
    server = ServeProcess([project], db, ENV, log)
    started.append(server.start())
    config = project / "twelvefold.toml"
    hidden = [str(config), str(tmp_path), "secret-operator-dir"]
    with server.client(token) as client:
        config.write_text("[server\n")  # as an editor may leave it mid-save
        detail = unavailable(client.get("/v1/threads"), log, hidden=hidden)
        assert detail.startswith("the server's configuration cannot be used: …/twelvefold.toml")
        unavailable(client.get("/metrics"), log, hidden=hidden)
        launched = client.post("/v1/agents/deploybot/threads", json={"input": "deploy"})
        unavailable(launched, log, hidden=hidden)
        config.write_text('[server]\nmetrics = "pub\\u202elic"\n')
        detail = unavailable(client.get("/metrics"), log, hidden=hidden)
        assert detail.startswith('…/twelvefold.toml: server.metrics must be "token" or'), detail
    with server.client(None) as anyone:  # without a token: not even that
        assert anyone.get("/metrics").status_code == 401
