"""`pip install .` with no extras, into a fresh virtualenv, gives a CLI whose commands work,
and a pytest that our registered plugin does not break (issue 9 §1).

Slow (a virtualenv, a wheel build and every dependency installed from the machine's package
index or wheel cache: about a minute), so it runs in `make test-install` (which .ci/run runs)
rather than in `make test`. The package is built from a copy of the working tree, so the test
leaves no build artefacts in the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEFT_OUT = shutil.ignore_patterns(
    ".venv", "build", ".git", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "*.db*"
)

pytestmark = [pytest.mark.slow, pytest.mark.install]


def _run(
    command: list[str], cwd: Path, env: dict[str, str], ok: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode in ok, (
        f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(the new environment's bin/, an environment without this test run's virtualenv)."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=LEFT_OUT)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONWARNINGS"] = "ignore::UserWarning"  # setuptools' build notices
    _run([str(bin_dir / "pip"), "install", "--quiet", str(source)], tmp, env)
    return bin_dir, env


def test_the_cli_works_without_extras(fresh: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    bin_dir, env = fresh
    twelvefold = str(bin_dir / "twelvefold")
    project = tmp_path / "project"
    shutil.copytree(ROOT / "examples", project / "examples", ignore=LEFT_OUT)
    shutil.copytree(ROOT / "prompts", project / "prompts")
    assert "0.1.0" in _run([twelvefold, "--version"], project, env).stdout
    listed = _run([twelvefold, "--help"], project, env).stdout
    commands = [line.split()[0] for line in listed.split("Commands:")[1].splitlines() if line]
    for command in commands:  # each command's module imports in a plain install
        _run([twelvefold, command, "--help"], project, env)
    _run([twelvefold, "check", "examples/deploybot.agent"], project, env)
    _run([twelvefold, "compile", "examples/deploybot.agent", "-o", "out"], project, env)
    assert (project / "out" / "deploybot.py").is_file()
    _run(
        [twelvefold, "test", "examples/deploybot.agent", "--examples", "5", "--seed", "1"],
        project,
        env,
    )
    launched = _run(
        [
            twelvefold, "run", "examples/deploybot.agent", "--input", "deploy v1.2.3 to production",
            "--cassette", "examples/cassettes/deploybot.jsonl", "--db", "threads.db", "--json",
        ],
        project,
        env,
    )  # fmt: skip
    assert '"waiting"' in launched.stdout, launched.stdout


def test_pytest_in_a_users_project_is_not_broken_by_the_plugin(
    fresh: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bin_dir, env = fresh
    _run([str(bin_dir / "pip"), "install", "--quiet", "pytest"], tmp_path, env)
    project = tmp_path / "empty"
    project.mkdir()
    assert "--agents" in _run([str(bin_dir / "pytest"), "--help"], project, env).stdout
    # An empty project: nothing collected (pytest's exit 5), not an internal error (3).
    _run([str(bin_dir / "pytest"), "-q"], project, env, ok=(5,))
    (project / "test_one.py").write_text("def test_one() -> None:\n    assert True\n")
    assert "1 passed" in _run([str(bin_dir / "pytest"), "-q"], project, env).stdout
