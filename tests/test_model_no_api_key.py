"""A model call to the default endpoint (api.openai.com) with no OPENAI_API_KEY fails at
once, saying so and how to fix it, without trying to connect (a red team, rt9: it failed
after about 5 s with `APIConnectionError: Cannot connect to host api.openai.com:443`, and
nothing mentioned the key). The failure is a step failure in the log, so the thread can
be retried once a key is set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import EXAMPLES
from twelvefold.cli import cli
from twelvefold.runtime import openai_client


@pytest.fixture
def no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TWELVEFOLD_DB", "TWELVEFOLD_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_LOG", "0")

    def no_connection(*args: object, **kwargs: object) -> None:
        raise AssertionError("a connection was attempted without a key")

    # Any request the client would send fails the test's expectations (its message would
    # not name the key): nothing may be sent at all.
    monkeypatch.setattr(openai_client.ReusingClient, "post_chat_completion", no_connection)
    return tmp_path


def test_run_without_a_key_says_which_settings_are_missing(no_key: Path) -> None:
    agent = str(EXAMPLES / "calculator.agent")
    result = CliRunner().invoke(cli, ["run", agent, "--input", "what is 2+2?", "--json"])
    view = json.loads(result.stdout.splitlines()[-1])
    assert view["status"] == "failed", view
    error = view["error"]
    assert error["type"] == "MissingAPIKey"
    for said in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "--cassette", "api.openai.com"):
        assert said in error["message"], error
    assert "a connection was attempted" not in error["message"]

    shown = CliRunner().invoke(cli, ["show", view["thread_id"]])
    assert re.search(r"step_failed +MissingAPIKey: no OPENAI_API_KEY", shown.stdout), shown.stdout
    assert f"retry: twelvefold resume {view['thread_id']} --retry" in shown.stdout


def test_a_base_url_needs_no_key(no_key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A local endpoint (Ollama, vLLM) takes no key: the call is sent (here: refused by the
    # stand-in above), not stopped for want of one.
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    agent = str(EXAMPLES / "calculator.agent")
    result = CliRunner().invoke(cli, ["run", agent, "--input", "what is 2+2?", "--json"])
    view = json.loads(result.stdout.splitlines()[-1])
    assert view["error"]["type"] != "MissingAPIKey", view
