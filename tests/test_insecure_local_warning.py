"""`serve --insecure-local`'s warning says what `local` may do, and it is true: `local` is a
person under the same rules as anyone (docs/server.md), so an approval whose groups do not
list `local` is refused to it (a red team, rt9: the warning said `local` "decides every
approval and reads every thread", and the same server answered its decision with 403)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.runtime_helpers import DEPLOY_CASSETTE, EXAMPLES, write_cassette
from tests.support.serve_process import ServeProcess


def test_the_warning_says_local_decides_only_what_its_groups_allow(tmp_path: Path) -> None:
    cassette = write_cassette(tmp_path / "deploy.jsonl", DEPLOY_CASSETTE)
    server = ServeProcess(
        [EXAMPLES / "deploybot.agent"], tmp_path / "threads.db", {"TWELVEFOLD_NOTIFY_LOG": "0"},
        tmp_path / "serve.log", ("--insecure-local", "--cassette", str(cassette)),
    )  # fmt: skip
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            launched = client.post(
                "/v1/agents/deploybot/threads?wait=true", json={"input": "deploy v1.2.3"}
            ).json()
            assert launched["waiting_for"] == "approval", launched
            decided = client.post(
                f"/v1/threads/{launched['thread_id']}/decisions",
                json={"request": launched["request"], "decision": "approve"},
            )
    finally:
        server.stop()
    # examples/twelvefold.toml: release-managers are ana and carol, not `local`
    assert decided.status_code == 403, decided.text
    (warning,) = [
        line for line in (tmp_path / "serve.log").read_text().splitlines() if "WARNING" in line
    ]
    assert "decides every approval" not in warning and "reads every thread" not in warning
    assert "acts as the person `local`" in warning
    assert "an approval only if its approvers groups list `local`" in warning
