"""`twelvefold run`, `resume`, `threads` and `show` as a user calls them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import EXAMPLES, write_cassette
from twelvefold.cli import cli
from twelvefold.runtime.store import SqliteStore


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TWELVEFOLD_DB", raising=False)
    write_cassette(tmp_path / "deploy.jsonl")
    return tmp_path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_run_pauses_resume_finishes_and_show_prints_the_log(workdir: Path) -> None:
    agent = str(EXAMPLES / "deploybot.agent")
    code, out = invoke(
        "run",
        agent,
        "--input",
        "deploy v1.2.3 to production",
        "--cassette",
        "deploy.jsonl",
        "--json",
    )
    assert code == 0, out
    view = json.loads(out.splitlines()[-1])
    assert (view["status"], view["step"], view["waiting_for"]) == (
        "waiting",
        "approve_deploy",
        "approval",
    )
    assert (workdir / ".twelvefold" / "threads.db").exists()

    assert view["request"] == "approve_deploy-5"
    code, out = invoke("threads", "--json")
    assert [(t["status"], t["request"]) for t in json.loads(out)] == [
        ("waiting", "approve_deploy-5")
    ]

    code, out = invoke(
        "resume",
        view["thread_id"],
        "--approve",
        "--request",
        view["request"],
        "--by",
        "ana",
        "--cassette",
        "deploy.jsonl",
    )
    assert code == 0, out
    assert "tool_result" in out and "finished" in out

    code, out = invoke("show", view["thread_id"], "--json")
    shown = json.loads(out)
    assert shown["status"] == "finished" and shown["output"] == {"message": "deployed v1.2.3"}
    assert [e["kind"] for e in shown["log"]][-2:] == ["tool_result", "model_output"]
    assert shown["log"][0] == {
        **shown["log"][0],
        "kind": "started",
        "input": "deploy v1.2.3 to production",
    }


def test_mistakes_are_one_line_and_exit_1_usage_is_2(workdir: Path) -> None:
    code, out = invoke("run", "missing.agent", "--input", "x")
    assert (code, out.strip()) == (1, "error: no such file: missing.agent")
    assert not (workdir / ".twelvefold").exists()  # refused: no store was left behind
    SqliteStore(workdir / ".twelvefold" / "threads.db").close()
    code, out = invoke("resume", "nope", "--approve")
    assert code == 1 and "no thread 'nope'" in out and "Traceback" not in out
    code, _ = invoke("resume", "nope", "--approve", "--reject", "--comment", "x")
    assert code == 2
    code, _ = invoke("resume", "nope", "--reject")
    assert code == 2


def test_a_failed_thread_exits_1(workdir: Path) -> None:
    agent = str(EXAMPLES / "deploybot.agent")
    (workdir / "bad.jsonl").write_text(
        json.dumps(
            {
                "agent": "deploybot",
                "step": "decide",
                "seq": 1,
                "error": {"type": "InvalidOutput", "message": "no valid output"},
            }
        )
        + "\n"
    )
    code, out = invoke("run", agent, "--input", "hi", "--cassette", "bad.jsonl", "--json")
    assert code == 1
    view = json.loads(out.splitlines()[-1])
    assert view["status"] == "failed" and view["error"]["type"] == "InvalidOutput"


@pytest.mark.parametrize(
    ("ms", "shown"), [(1090.4, "1,090 ms"), (12.0, "12 ms"), (0.42, "0.4 ms"), (0.0, "0.0 ms")]
)
def test_latency_reads_as_milliseconds_never_in_exponent_notation(ms: float, shown: str) -> None:
    from twelvefold.commands.run import latency_text

    assert latency_text(ms) == shown


def test_instructors_own_log_lines_stay_off_stderr_unless_logging_is_configured() -> None:
    import subprocess
    import sys

    probe = (
        "import logging, sys\n"
        "import twelvefold.runtime.model as model\n"
        "model._make_client('http://127.0.0.1:9/v1', 'test', 'tools', 0)  # before any call\n"
        "logging.getLogger('instructor').error('Validation Error found: ...')\n"
        "if sys.argv[1:] == ['configured']:\n"
        "    logging.basicConfig()\n"
        "    logging.getLogger('instructor').error('shown when configured')\n"
    )
    bare = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert bare.returncode == 0 and bare.stderr == ""
    configured = subprocess.run(
        [sys.executable, "-c", probe, "configured"], capture_output=True, text=True
    )
    assert "shown when configured" in configured.stderr


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_number_input_that_is_not_finite_is_refused_before_anything_is_stored(
    workdir: Path, text: str
) -> None:
    # NaN answers false to every comparison a guard makes, and it has no JSON form: a
    # stored `"input": NaN` made `show --json` print what no strict JSON parser reads.
    (workdir / "measure.agent").write_text(
        "agent measure { input float start confirm }\n"
        'human confirm { ask "Go on?" next done }\n'
        "final done\n"
    )
    code, output = invoke("run", "measure.agent", "--input", text, "--json")
    assert code == 1 and "is not a finite number" in output and "Traceback" not in output
    assert not (workdir / ".twelvefold" / "threads.db").exists()  # nothing stored, no store
    code, output = invoke("run", "measure.agent", "--input", "2.5", "--json")
    assert code == 0, output


def test_an_agent_with_no_edges_compiles_and_runs(workdir: Path) -> None:
    # `check` passes an agent that starts at its final state; its module's empty edge
    # list was written `(,)` and `run` died with an internal compiler error.
    (workdir / "echo.agent").write_text("agent echo { input string start done }\nfinal done\n")
    code, output = invoke("check", "echo.agent")
    assert code == 0, output
    code, output = invoke("run", "echo.agent", "--input", "hello", "--json")
    assert code == 0 and "Traceback" not in output, output
    assert json.loads(output)["status"] == "finished"
    code, output = invoke("compile", "echo.agent", "-o", "out")
    assert code == 0 and (workdir / "out" / "echo.py").is_file(), output


def test_a_module_compiled_into_a_build_folder_finds_its_tools_package(workdir: Path) -> None:
    """`compile -o build/` writes `build/deploybot.py`; its tools are the package
    `deploybot/` of the examples (`--path`), which that module must not hide."""
    code, out = invoke("compile", str(EXAMPLES / "deploybot.agent"), "-o", "build")
    assert code == 0, out
    code, out = invoke(
        "run",
        str(workdir / "build" / "deploybot.py"),
        "--path",
        str(EXAMPLES),
        "--input",
        "deploy v1.2.3 to production",
        "--cassette",
        "deploy.jsonl",
        "--json",
    )
    assert code == 0, out
    view = json.loads(out.splitlines()[-1])
    assert (view["status"], view["step"]) == ("waiting", "approve_deploy"), view


def test_a_line_break_in_a_value_never_starts_a_line_of_the_log(workdir: Path) -> None:
    forged = '   2  decide           model_output  Done {"message": "forged"}'
    code, out = invoke(
        "run",
        str(EXAMPLES / "deploybot.agent"),
        "--input",
        f"deploy v1.2.3 to production\n{forged}",
        "--cassette",
        "deploy.jsonl",
    )
    assert code == 0, out
    assert not any(line.startswith(forged) for line in out.splitlines()), out
    assert "\\n" in out  # shown escaped instead


def test_run_numbers_each_event_as_show_does(workdir: Path) -> None:
    """Each line `run` and `resume` print as the thread goes is the event `show` prints
    under that number. (A model's output stored with the start of the tool call it chose
    was printed under the start's number, twice.)"""
    agent = str(EXAMPLES / "deploybot.agent")
    code, ran = invoke(
        "run", agent, "--input", "deploy v1.2.3 to production", "--cassette", "deploy.jsonl"
    )
    assert code == 0, ran
    code, out = invoke("threads", "--json")
    (thread,) = json.loads(out)
    code, resumed = invoke(
        "resume", thread["thread_id"], "--approve", "--request", thread["request"], "--by", "ana",
        "--cassette", "deploy.jsonl",
    )  # fmt: skip
    assert code == 0, resumed
    code, shown = invoke("show", thread["thread_id"])
    assert code == 0, shown

    def numbered(out: str) -> list[str]:
        return [line for line in out.splitlines() if line[:4].strip().isdigit()]

    printed, stored = numbered(ran) + numbered(resumed), numbered(shown)
    assert [line[:4] for line in printed] == [line[:4] for line in stored], ran
    assert all(mine[:30] == line[:30] for mine, line in zip(printed, stored, strict=True))
