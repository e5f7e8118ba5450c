"""`twelvefold serve` as a user runs it: a real process on loopback, tokens made with
`twelvefold token create`, the real openai client against the scripted model server,
SQLite. Launch, pause, approve, finish; the SSE stream; kill -9 and SIGTERM while
threads run, and a new server finishing every thread with nothing lost and no keyed
side effect run twice.

The deploy tool is deploybot's own, copied with a barrier (`gated`): it waits for a
gate file, so a test holds deploys in flight while it kills or stops the server. The
ledger (DEPLOYBOT_LEDGER) records each deploy's idempotency key once per time it really
wrote, so a deploy run twice under two keys shows as two lines.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.openai_server import ScriptedOpenAI
from tests.support.serve_process import (
    ServeProcess,
    gated,
    json_of,
    launch_waiting,
    make_token,
    started_deploys,
)
from tests.support.server import deploy_project, deploy_responder
from tests.support.waiting import wait_for


@pytest.fixture
def setup(tmp_path: Path, openai_server: ScriptedOpenAI) -> dict[str, Any]:
    openai_server.responder = deploy_responder
    project = tmp_path / "project"
    deploy_project(project)
    gated(project)
    gate = tmp_path / "gate"
    env = {
        "OPENAI_BASE_URL": openai_server.base_url,
        "OPENAI_API_KEY": "test",
        "DEPLOYBOT_LEDGER": str(tmp_path / "ledger.jsonl"),
        "DEPLOYBOT_GATE": str(gate),
        "TWELVEFOLD_LEASE_SECONDS": "2",
        "TWELVEFOLD_DB": "",
    }
    db = tmp_path / "threads.db"
    return {
        "project": project,
        "db": db,
        "env": env,
        "gate": gate,
        "ledger": tmp_path / "ledger.jsonl",
        "bob": make_token(db, "bob"),
        "ana": make_token(db, "ana"),
        "log": tmp_path / "serve.log",
    }


@pytest.fixture
def servers(setup: dict[str, Any]) -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for server in started:
        server.stop()


def serve(setup: dict[str, Any], servers: list[ServeProcess], *args: str) -> ServeProcess:
    server = ServeProcess([setup["project"]], setup["db"], setup["env"], setup["log"], args)
    servers.append(server.start())
    return server


def ledger(setup: dict[str, Any]) -> list[dict[str, str]]:
    path: Path = setup["ledger"]
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def sse_events(response: httpx.Response) -> list[dict[str, str]]:
    """The events of a text/event-stream response, read as they arrive."""
    found: list[dict[str, str]] = []
    block: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if block:
                found.append(block)
            block = {}
            continue
        field, _, value = line.partition(": ")
        block[field] = value
    return found


def test_launch_pause_approve_finish_over_http(
    setup: dict[str, Any], servers: list[ServeProcess]
) -> None:
    (setup["gate"]).touch()  # deploys go straight through
    server = serve(setup, servers)
    with server.client(setup["bob"]) as bob, server.client(setup["ana"]) as ana:
        assert bob.get("/v1/threads/x").status_code == 404
        with server.client(None) as anonymous:
            refused = anonymous.get("/v1/threads")
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        launched = json_of(bob.post("/v1/agents/deploybot/threads", json={"input": "deploy"}), 202)
        thread = launched["thread_id"]
        # The stream opened at once follows the thread as it runs, and ends at the pause.
        with bob.stream("GET", f"/v1/threads/{thread}/stream") as response:
            assert response.status_code == 200
            first = sse_events(response)
        view = json_of(bob.get(f"/v1/threads/{thread}"))
        assert (view["status"], view["waiting_for"]) == ("waiting", "approval")
        assert [int(e["id"]) for e in first if "id" in e] == list(range(1, view["events"] + 1))
        assert first[-1]["event"] == "end"
        assert json.loads(first[-1]["data"])["status"] == "waiting"

        assert bob.post(f"/v1/threads/{thread}/decisions", json={
            "request": view["request"], "decision": "approve"}).status_code == 403  # fmt: skip
        decided = ana.post(
            f"/v1/threads/{thread}/decisions",
            json={"request": view["request"], "decision": "approve"},
        )
        assert decided.status_code == 200, decided.text
        stale = ana.post(
            f"/v1/threads/{thread}/decisions",
            json={"request": view["request"], "decision": "approve"},
        )
        assert stale.status_code == 409, stale.text
        with bob.stream(
            "GET", f"/v1/threads/{thread}/stream", headers={"Last-Event-ID": str(view["events"])}
        ) as response:
            rest = sse_events(response)
        done = json_of(bob.get(f"/v1/threads/{thread}"))
        assert done["status"] == "finished", done
        ids = [int(e["id"]) for e in rest if "id" in e]
        assert ids == list(range(view["events"] + 1, done["events"] + 1))
        logged = json_of(bob.get(f"/v1/threads/{thread}/events"))
        assert [e["seq"] for e in logged] == list(range(1, done["events"] + 1))
        streamed = [json.loads(e["data"]) for e in first + rest if "id" in e]
        assert streamed == logged
        assert [e["event"] for e in first + rest if "id" in e] == [e["kind"] for e in logged]
    assert len(ledger(setup)) == 1


def paused_at_the_deploy(
    setup: dict[str, Any], server: ServeProcess, bob: httpx.Client, ana: httpx.Client
) -> dict[str, Any]:
    """A thread bob launched and ana approved, its deploy started and held at the gate:
    its next events are appended once the gate opens."""
    launched = json_of(bob.post("/v1/agents/deploybot/threads", json={"input": "deploy"}), 202)
    thread = launched["thread_id"]
    wait_for(lambda: bob.get(f"/v1/threads/{thread}").json()["status"] == "waiting", "the pause")
    view = json_of(bob.get(f"/v1/threads/{thread}"))
    decided = ana.post(
        f"/v1/threads/{thread}/decisions", json={"request": view["request"], "decision": "approve"}
    )
    assert decided.status_code == 200, decided.text
    wait_for(lambda: bool(started_deploys(setup["gate"])), "the deploy to start")
    return json_of(bob.get(f"/v1/threads/{thread}"))


@pytest.mark.parametrize("taken", ["token revoked", "no longer a reader"])
def test_an_open_stream_ends_once_its_caller_may_no_longer_read(
    setup: dict[str, Any], servers: list[ServeProcess], taken: str
) -> None:
    # The docs say a revoked token stops working at once: a stream opened before the
    # revoke went on sending every event after it (rt13). So did one whose person was
    # taken out of `readers`.
    server = serve(setup, servers)
    dave = make_token(setup["db"], "dave")
    with server.client(setup["bob"]) as bob, server.client(setup["ana"]) as ana:
        view = paused_at_the_deploy(setup, server, bob, ana)
        thread, seen = view["thread_id"], view["events"]
        with (
            server.client(dave) as client,
            client.stream(
                "GET", f"/v1/threads/{thread}/stream", headers={"Last-Event-ID": str(seen)}
            ) as response,
        ):
            assert response.status_code == 200  # open: dave may read it now
            if taken == "token revoked":
                subprocess.run(
                    [sys.executable, "-m", "twelvefold", "token", "revoke", dave,
                     "--db", str(setup["db"])],
                    check=True, capture_output=True,
                )  # fmt: skip
            else:
                config = setup["project"] / "twelvefold.toml"
                edited = config.with_suffix(".new")  # saved in one rename, as the docs ask
                readers = '\n[server]\nreaders = ["release-managers"]\n'
                edited.write_text(config.read_text() + readers)
                edited.replace(config)
            setup["gate"].touch()  # the deploy ends: the thread appends its next events
            received = sse_events(response)
        wait_for(lambda: ana.get(f"/v1/threads/{thread}").json()["status"] == "finished", "the end")
        done = json_of(ana.get(f"/v1/threads/{thread}"))
    assert done["events"] > seen, done  # there were events to send
    assert [e for e in received if "id" in e] == []  # not one event after it was taken
    assert [e["event"] for e in received] == ["error"], received
    said = json.loads(received[0]["data"])
    status, words = (401, "revoked") if taken == "token revoked" else (404, "no thread")
    assert said["status"] == status and words in said["detail"], said


def test_a_new_server_finishes_every_thread_after_kill_9(
    setup: dict[str, Any], servers: list[ServeProcess]
) -> None:
    count = 3
    first = serve(setup, servers)
    with first.client(setup["bob"]) as bob, first.client(setup["ana"]) as ana:
        views = launch_waiting(bob, count)
        for view in views:
            decided = ana.post(
                f"/v1/threads/{view['thread_id']}/decisions",
                json={"request": view["request"], "decision": "approve"},
            )
            assert decided.status_code == 200, decided.text
    wait_for(lambda: len(started_deploys(setup["gate"])) == count, "every deploy to start")
    first.kill()  # every deploy is in flight: ToolStarted stored, no result
    assert ledger(setup) == []
    setup["gate"].touch()
    second = serve(setup, servers)
    with second.client(setup["bob"]) as bob:

        def finished() -> bool:
            return all(
                bob.get(f"/v1/threads/{v['thread_id']}").json()["status"] == "finished"
                for v in views
            )

        wait_for(finished, "the new server to finish every thread")
        keys = []
        for view in views:
            logged = json_of(bob.get(f"/v1/threads/{view['thread_id']}/events"))
            assert [e["seq"] for e in logged] == list(range(1, len(logged) + 1))
            (key,) = {
                e["key"] for e in logged if e["kind"] == "tool_started" and e["step"] == "deploy"
            }
            keys.append(key)
    assert sorted(entry["key"] for entry in ledger(setup)) == sorted(keys)
    assert len(ledger(setup)) == count, "a keyed deploy ran twice"


def test_a_reply_under_way_at_kill_9_is_sent_by_the_next_server_once_its_claim_lapses(
    setup: dict[str, Any], servers: list[ServeProcess]
) -> None:
    """Found by a review: a server killed outright while sending a webhook reply left
    its target marked told, and the reply was never sent. The store says a send is under
    way and until when (`sending_until`); once that lapses, the running server's sweep
    sends the reply again, under the same `webhook-id`."""
    import sqlite3

    from tests.support.receivers import HttpReceiver
    from tests.support.server import DEPLOY_CONFIG

    config = DEPLOY_CONFIG + '[server]\nwebhook_hosts = ["127.0.0.1"]\n'
    (setup["project"] / "twelvefold.toml").write_text(config)
    receiver = HttpReceiver()
    receiver.answering.clear()  # the first send stays open: the server dies in it
    first = serve(setup, servers)
    with first.client(setup["bob"]) as bob:
        body = {"input": "deploy", "webhook": receiver.url("/hook")}
        launched = json_of(bob.post("/v1/agents/deploybot/threads", json=body), 202)
    wait_for(lambda: len(receiver.received) == 1, "the reply to be under way")
    first.kill()
    receiver.answering.set()

    def target() -> tuple[int, float | None]:
        with sqlite3.connect(setup["db"]) as db:
            row = db.execute("SELECT replied_seq, sending_until FROM server_replies").fetchone()
        return int(row[0]), row[1]

    claimed, until = target()
    assert claimed > 0 and until is not None  # a send under way, never said finished
    serve(setup, servers, "--sweep-seconds", "0.2")
    assert len(receiver.received) == 1  # the claim holds: its sender might be alive
    with sqlite3.connect(setup["db"]) as db:  # as CLAIM_SECONDS passing
        db.execute("UPDATE server_replies SET sending_until = sending_until - 100000")
    wait_for(lambda: len(receiver.received) == 2, "the lapsed reply to be sent again")
    wait_for(lambda: target() == (claimed, None), "the reply to be marked sent")
    ids = [{k.lower(): v for k, v in h.items()}["webhook-id"] for _, h, _ in receiver.received]
    assert ids[0] == ids[1]  # the same point of the thread: a receiver drops the copy
    assert json.loads(receiver.received[1][2])["thread"]["thread_id"] == launched["thread_id"]


def test_sigterm_lets_go_and_a_restart_runs_the_thread_on(
    setup: dict[str, Any], servers: list[ServeProcess]
) -> None:
    first = serve(setup, servers, "--grace", "1")
    with first.client(setup["bob"]) as bob, first.client(setup["ana"]) as ana:
        (view,) = launch_waiting(bob, 1)
        ana.post(
            f"/v1/threads/{view['thread_id']}/decisions",
            json={"request": view["request"], "decision": "approve"},
        )
    wait_for(lambda: len(started_deploys(setup["gate"])) == 1, "the deploy to start")
    # uvicorn shuts down, then re-raises SIGTERM (so a supervisor sees how it ended).
    assert first.terminate() in (0, -signal.SIGTERM)
    stopped = setup["log"].read_text()
    assert "Application shutdown complete" in stopped
    # The model client's connection pool was closed on the server's loop as it stopped.
    assert "Unclosed" not in stopped and "Traceback" not in stopped, stopped
    from twelvefold.runtime.store import SqliteStore

    store = SqliteStore(setup["db"], create=False)
    try:
        assert store.info(view["thread_id"]).status == "running"
        assert store.lease(view["thread_id"]) is None, "the stopped server kept its lease"
    finally:
        store.close()
    setup["gate"].touch()
    second = serve(setup, servers)
    with second.client(setup["bob"]) as bob:
        wait_for(
            lambda: bob.get(f"/v1/threads/{view['thread_id']}").json()["status"] == "finished",
            "the restarted server to finish the thread",
        )
    assert len(ledger(setup)) == 1


def test_a_keyless_call_in_flight_at_kill_9_fails_as_interrupted_until_retried(
    setup: dict[str, Any], servers: list[ServeProcess]
) -> None:
    setup["gate"].touch()
    list_gate = setup["gate"].parent / "list-gate"
    setup["env"]["DEPLOYBOT_LIST_GATE"] = str(list_gate)
    first = serve(setup, servers)
    with first.client(setup["bob"]) as bob:
        view = json_of(bob.post("/v1/agents/deploybot/threads", json={"input": "deploy"}), 202)
    wait_for(lambda: Path(f"{list_gate}.started").exists(), "list_tags to start")
    first.kill()
    list_gate.touch()
    second = serve(setup, servers)
    thread = view["thread_id"]
    with second.client(setup["bob"]) as bob, second.client(setup["ana"]) as ana:
        wait_for(
            lambda: bob.get(f"/v1/threads/{thread}").json()["status"] == "failed",
            "the interrupted call to fail the thread",
        )
        failed = json_of(bob.get(f"/v1/threads/{thread}"))
        assert (failed["step"], failed["error"]["type"]) == ("list_tags", "Interrupted"), failed
        retried = ana.post(f"/v1/threads/{thread}/retry?wait=true")
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] == "waiting"
        logged = json_of(bob.get(f"/v1/threads/{thread}/events"))
    assert [e["seq"] for e in logged] == list(range(1, len(logged) + 1))
    assert [e["by"] for e in logged if e["kind"] == "retried"] == ["ana"]


def test_kill_9_during_decisions_leaves_each_recorded_and_acted_on_or_not_at_all(
    setup: dict[str, Any], servers: list[ServeProcess]
) -> None:
    """Decisions sent while the server is killed: after a restart each thread either
    holds its approval and runs on to the end (the deploy once), or holds none and still
    waits for the same request, which can then be decided. Never half-applied: no thread
    is left `running` with nobody to run it, no approval without its run."""
    import concurrent.futures
    import contextlib

    setup["gate"].touch()  # deploys go straight through
    count = 4
    first = serve(setup, servers)
    with first.client(setup["bob"]) as bob:
        views = launch_waiting(bob, count)

    def approve(view: Any) -> None:
        # The server may die under it: what counts is what the store says.
        with first.client(setup["ana"]) as ana, contextlib.suppress(httpx.HTTPError):
            ana.post(
                f"/v1/threads/{view['thread_id']}/decisions",
                json={"request": view["request"], "decision": "approve"},
            )

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        sent = [pool.submit(approve, view) for view in views]
        first.kill()
        for future in sent:
            future.result()
    second = serve(setup, servers)
    with second.client(setup["bob"]) as bob, second.client(setup["ana"]) as ana:

        def settled() -> bool:
            states = [bob.get(f"/v1/threads/{v['thread_id']}").json() for v in views]
            return all(s["status"] in ("finished", "waiting") for s in states)

        wait_for(settled, "every thread to finish or to wait again")
        for view in views:
            logged = json_of(bob.get(f"/v1/threads/{view['thread_id']}/events"))
            approved = [e for e in logged if e["kind"] == "approved"]
            now = json_of(bob.get(f"/v1/threads/{view['thread_id']}"))
            if approved:
                assert now["status"] == "finished", now
                continue
            assert (now["status"], now["request"]) == ("waiting", view["request"]), now
            decided = ana.post(
                f"/v1/threads/{view['thread_id']}/decisions?wait=true",
                json={"request": view["request"], "decision": "approve"},
            )
            assert json_of(decided)["status"] == "finished"
    assert len(ledger(setup)) == count, "every thread deployed exactly once"


def test_sigterm_answers_an_open_wait_with_the_thread_as_it_stands(
    setup: dict[str, Any], servers: list[ServeProcess]
) -> None:
    """A `?wait=true` request open when SIGTERM comes (its thread's deploy still
    running) is answered with the thread's view, as when the wait limit passes (a
    decision's answer is 200 then, with the thread `running`), and an open event stream
    ends. Both were cut off after uvicorn's own grace (a plain-text 500 and a traceback
    in the log), and the server's stop then gave the runs their grace a second time."""
    import threading

    first = serve(setup, servers, "--grace", "1")
    answers: list[httpx.Response] = []
    with first.client(setup["bob"]) as bob:
        (view,) = launch_waiting(bob, 1)
    with first.client(setup["ana"]) as ana:

        def decide() -> None:
            answers.append(
                ana.post(
                    f"/v1/threads/{view['thread_id']}/decisions?wait=true",
                    json={"request": view["request"], "decision": "approve"},
                    timeout=60,
                )
            )

        streamed: list[str] = []

        def follow() -> None:  # the thread's event stream, open across the stop
            with ana.stream("GET", f"/v1/threads/{view['thread_id']}/stream", timeout=60) as r:
                streamed.extend(r.iter_lines())

        deciding, following = threading.Thread(target=decide), threading.Thread(target=follow)
        deciding.start()
        wait_for(lambda: len(started_deploys(setup["gate"])) == 1, "the deploy to start")
        following.start()
        wait_for(lambda: bool(streamed), "the stream to send the events so far")
        assert first.terminate() in (0, -signal.SIGTERM)
        deciding.join(60)
        following.join(60)
    [answer] = answers
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "running"
    stopped = setup["log"].read_text()
    assert "Traceback" not in stopped and "timeout graceful shutdown exceeded" not in stopped
