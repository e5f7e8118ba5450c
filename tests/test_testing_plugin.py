"""The pytest plugin and `twelvefold test`, run for real on an agent in a scratch folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.broken_reducers import BUGS, broken_source
from tests.support.generated import EXAMPLES, PROMPTS
from twelvefold.cli import cli

HOLDS = """
def invariant_production_deploys_come_from_an_approval(state, events):
    running = state.status == "running" and state.tool_key is None  # cancelled: no deploy
    if running and state.step == "deploy" and state.value.env == "production":
        assert type(events[-1]).__name__ in ("Approved", "StepFailed", "Retried")


def helper_not_an_invariant(state, events):
    raise AssertionError("never collected: not named invariant_*")
"""
BREAKS = """
def invariant_never_lists_tags(state, events):
    assert state.step != "list_tags", "listed the tags"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copy(EXAMPLES / "deploybot.agent", tmp_path / "deploybot.agent")
    shutil.copytree(PROMPTS, tmp_path / "prompts")
    (tmp_path / "deploybot_invariants.py").write_text(HOLDS)
    return tmp_path


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--agents-examples",
            "15",
            *args,
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_the_plugin_runs_one_test_per_property_with_the_users_invariants(project: Path) -> None:
    result = _pytest(project, "--agents", ".", ".")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "15 passed" in result.stdout  # 13 properties, user_invariants, edges_reachable


def test_a_broken_invariant_fails_its_test_with_the_log(project: Path) -> None:
    (project / "invariants.py").write_text(BREAKS)
    result = _pytest(project, "--agents", ".", ".", "-rf")
    assert result.returncode == 1
    assert "1 failed, 14 passed" in result.stdout
    assert "invariants.py:invariant_never_lists_tags failed: listed the tags" in result.stdout
    assert "model_output  @decide ListGitTags()  <-- here" in result.stdout


def test_agent_files_are_not_collected_unless_asked_for(project: Path) -> None:
    result = _pytest(project, ".")
    assert result.returncode == 5  # no tests collected
    named = _pytest(project, "deploybot.agent")
    assert named.returncode == 0 and "15 passed" in named.stdout


def test_the_cli_prints_coverage_and_paths(project: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["test", str(project / "deploybot.agent"), "--examples", "15", "--seed", "1", "--paths"],
    )
    assert result.exit_code == 0, result.output
    assert "ok    max_steps_ceiling" in result.output
    assert "ok    user_invariants" in result.output
    assert "shortest paths reach 21/21 edges" in result.output
    assert "deploy --on error--> decide  (4 events)" in result.output


def test_the_cli_fails_with_a_minimal_example_for_a_broken_module(tmp_path: Path) -> None:
    module = tmp_path / "deploybot.py"
    module.write_text(broken_source(BUGS["skip_approval"]))
    result = CliRunner().invoke(cli, ["test", str(module), "--examples", "20", "--seed", "0"])
    assert result.exit_code == 1
    assert "FAIL  approval_before_sensitive_tools" in result.output
    assert "approval_before_sensitive_tools fails; minimal failing example:" in result.output
    assert (
        "model_output  @decide DeployBackend(tag='', env='production')  <-- here" in result.output
    )
    assert "error: approve_deploy --on approved--> deploy: no legal log takes it" in result.output
    assert "reproduce with --seed 0" in result.output


def test_the_cli_needs_an_agent() -> None:
    result = CliRunner().invoke(cli, ["test"])
    assert result.exit_code == 2


def test_two_modules_with_one_file_name_are_each_tested(tmp_path: Path) -> None:
    from twelvefold.compiler import compile_file

    (good_source,) = compile_file(EXAMPLES / "deploybot.agent", prompts_dir=PROMPTS).files.values()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deploybot.py").write_text(good_source)
    (tmp_path / "b" / "deploybot.py").write_text(broken_source(BUGS["skip_approval"]))
    result = CliRunner().invoke(
        cli,
        [
            "test",
            *(str(tmp_path / folder / "deploybot.py") for folder in "ab"),
            *("--examples", "20", "--seed", "0"),
        ],
    )
    assert result.exit_code == 1, result.output
    _, first, second = result.output.split("deploybot (")
    assert "FAIL" not in first.split("coverage")[0]
    assert "FAIL  approval_before_sensitive_tools" in second


def test_a_module_is_judged_against_its_source_when_it_can_be_found(tmp_path: Path) -> None:
    module = tmp_path / "deploybot.py"
    module.write_text(broken_source(BUGS["agent_raises_max_steps"]))
    alone = CliRunner().invoke(cli, ["test", str(module), "--examples", "10", "--seed", "0"])
    assert "note: no .agent source found for it" in alone.output
    assert "--source FILE" in alone.output

    judged = CliRunner().invoke(
        cli,
        [
            *("test", str(module), "--source", str(EXAMPLES / "deploybot.agent")),
            *("--examples", "10", "--seed", "0", "--prompts", str(PROMPTS)),
        ],
    )
    assert judged.exit_code == 1, judged.output
    assert "judged against its source" in judged.output
    assert "FAIL  agrees_with_source" in judged.output
    assert "max_steps is 25, the source says 24" in judged.output

    shutil.copy(EXAMPLES / "deploybot.agent", tmp_path / "deploybot.agent")
    shutil.copytree(PROMPTS, tmp_path / "prompts")
    beside = CliRunner().invoke(cli, ["test", str(module), "--examples", "10", "--seed", "0"])
    assert beside.exit_code == 1 and "max_steps is 25, the source says 24" in beside.output


def test_source_goes_with_one_module() -> None:
    agent = str(EXAMPLES / "deploybot.agent")
    result = CliRunner().invoke(cli, ["test", agent, "--source", agent])
    assert result.exit_code == 2 and "--source goes with exactly one" in result.output


@pytest.mark.parametrize("count", ["100000000000000000000", "100001"])
def test_examples_past_the_bound_is_a_usage_error(project: Path, count: str) -> None:
    """10**20 threads per property would run for ever (printing nothing, on a pipe)."""
    result = CliRunner().invoke(
        cli, ["test", str(project / "deploybot.agent"), "--examples", count]
    )
    assert result.exit_code == 2
    assert "Invalid value for '--examples'" in result.output
    assert "1<=x<=100000" in result.output


def test_the_header_is_printed_before_the_threads_are_generated(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is being tested, how many threads and the seed show before the long work (a
    pipe sees them at once: click.echo flushes), not only after it."""

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("twelvefold.commands.testcmd.run_suite", interrupted)
    result = CliRunner().invoke(
        cli, ["test", str(project / "deploybot.agent"), "--examples", "7", "--seed", "3"]
    )
    assert result.output.startswith("deploybot (")
    assert "7 threads per property, seed 3" in result.output.splitlines()[0]
