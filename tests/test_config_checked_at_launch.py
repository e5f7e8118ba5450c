"""The configuration the loop reads lazily (rate limits, `model_call_timeout`, prices) is
checked before a thread exists: a bad value is one line and exit 1 from `run`, and
`serve` and `worker` (through `served_agents`) refuse to start, instead of a
stored thread failing at its first model step (or every served thread failing)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import EXAMPLES
from twelvefold.cli import cli
from twelvefold.runtime.api import AsyncRuntime
from twelvefold.runtime.store import MemoryStore
from twelvefold.server.service import ServeError, served_agents

BAD = [
    "model_call_timeout = -1",
    'model_call_timeout = "600"',
    "model_call_timeout = nan",
    "model_call_timeout = inf",
    "model_call_timeout = 0",
    "model_call_timeout = 86401",
    "model_call_timeout = true",
    "model_call_timeout = [1]",
    "model_calls_in_flight = 0",
    "rate_limits = 3",
    'prices = { "gpt-4o" = { input = -1, output = 1 } }',
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(EXAMPLES, tmp_path / "p")
    shutil.copytree(EXAMPLES.parent / "prompts", tmp_path / "p" / "prompts")
    monkeypatch.chdir(tmp_path / "p")
    monkeypatch.delenv("TWELVEFOLD_DB", raising=False)
    monkeypatch.delenv("TWELVEFOLD_STORE", raising=False)
    return tmp_path / "p"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("setting", BAD)
def test_run_refuses_a_bad_setting_before_the_thread_exists(project: Path, setting: str) -> None:
    (project / "twelvefold.toml").write_text(setting + "\n")
    code, _, err = invoke(
        "run", "deploybot.agent", "--input", "x", "--db", "t.db",
        "--cassette", str(project / "cassettes" / "deploybot.jsonl"),
    )  # fmt: skip
    assert code == 1, err
    assert err.startswith(f"error: {project / 'twelvefold.toml'}: "), err
    assert len(err.splitlines()) == 1, err
    assert not (project / "t.db").exists()  # no thread, and no store either


def test_serve_and_worker_refuse_to_start_on_a_bad_setting(project: Path) -> None:
    """`served_agents` is where both commands load what they serve (the refusal is
    `error: ...` and exit 1 there); called directly so that a build that does not refuse
    fails here instead of starting a server that never returns."""
    (project / "twelvefold.toml").write_text("model_call_timeout = -1\n")
    runtime = AsyncRuntime(MemoryStore())
    with pytest.raises(ServeError) as refused:
        served_agents(runtime, [project / "deploybot.agent"])
    assert "model_call_timeout" in str(refused.value)
    assert "\n" not in str(refused.value)
