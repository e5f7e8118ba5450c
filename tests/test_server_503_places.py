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
from typing import Any

import httpx
import pytest

from tests.support.forwarder import Forwarder
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


def test_connect_timeout_is_the_urls_own() -> None:
    from twelvefold.runtime.pgstore import DEFAULT_CONNECT_TIMEOUT, connect_timeout_of

    base = "postgresql://agents@db.internal/tf"
    assert connect_timeout_of(f"{base}?connect_timeout=3") == 3
    assert connect_timeout_of(f"{base}?connect_timeout=1") == 2  # libpq's least
    assert connect_timeout_of(base) == DEFAULT_CONNECT_TIMEOUT
    for unusable in ("0", "-5", "abc", "2.5"):  # none, "no end", or not libpq's
        assert connect_timeout_of(f"{base}?connect_timeout={unusable}") == DEFAULT_CONNECT_TIMEOUT


def test_a_postgresql_store_lost_is_a_503_naming_none_of_its_url_at_once(
    tmp_path: Path, started: list[ServeProcess], postgres_url: str
) -> None:
    """The 503 of a store that cannot be reached names none of its URL (its user, database
    or parameters); and it says why (the connection refused), which is the call's own
    attempt after `connect_timeout`, not the pool's timeout after 30 s."""
    project = tmp_path / "project"
    deploy_project(project)
    port, database = re.fullmatch(r"postgresql://postgres@127\.0\.0\.1:(\d+)/(\w+)",
                                  postgres_url).groups()  # type: ignore[union-attr]  # fmt: skip
    forwarder = Forwarder(int(port))
    store = (
        f"postgresql://postgres@127.0.0.1:{forwarder.port}/{database}"
        "?application_name=internal-app-name&connect_timeout=2"
    )
    log = tmp_path / "serve.log"
    server = ServeProcess([project], store, ENV, log, ("--insecure-local",))
    started.append(server.start())
    try:
        with server.client(None) as client:
            assert client.get("/v1/threads").status_code == 200
            forwarder.close()  # the database is gone: its connections end, its port refuses
            response = client.get("/v1/threads")
    finally:
        forwarder.close()
    # rt18: and not libpq's own words for where the server is (`server at "127.0.0.1",
    # port 5432`): the operator's, in the server's log.
    hidden: list[Any] = [
        *(database, "internal-app-name", "connect_timeout", "postgres@"),
        *("127.0.0.1", f"port {forwarder.port}", str(forwarder.port)),
    ]
    detail = unavailable(response, log, hidden=hidden)
    assert detail.startswith("the store at postgresql://… failed: "), detail
    assert "Connection refused" in detail, detail


@pytest.mark.parametrize(
    "said",
    [
        'connection to server at "db.internal" (10.0.0.5), port 6543 failed: timeout expired',
        'could not translate host name "db.internal" to address: Name or service not known',
        'FATAL:  database "secret_tf" does not exist',
        'FATAL:  password authentication failed for user "svc_agents"',
        'FATAL:  role "svc_agents" does not exist',
    ],
)
def test_libpqs_words_for_the_server_its_database_and_user_are_left_out(said: str) -> None:
    from twelvefold.server.service import unavailable_detail

    detail = unavailable_detail(RuntimeError(f"the store at postgresql://… failed: {said}"))
    for hidden in ("db.internal", "10.0.0.5", "6543", "secret_tf", "svc_agents"):
        assert hidden not in detail, detail
    assert '"…"' in detail, detail
