"""`twelvefold graph` end to end: real files, a real SQLite store, the real `dot`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydot
import pytest
from click.testing import CliRunner

from twelvefold.cli import cli
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.loading import load_agent
from twelvefold.runtime.store import SqliteStore, ThreadInfo

ROOT = Path(__file__).resolve().parent.parent
DEPLOYBOT = str(ROOT / "examples" / "deploybot.agent")
THREAD_LOG = ROOT / "docs" / "images" / "deploybot-thread.json"

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's `dot` is not on PATH (`make system-deps` installs Debian graphviz)",
)


@pytest.fixture(autouse=True)
def in_a_scratch_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command caches compiled agents under ./.twelvefold; keep that out of the repo."""
    monkeypatch.chdir(tmp_path)


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["graph", *args], env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_mermaid_goes_to_stdout_by_default() -> None:
    code, out, _ = run(DEPLOYBOT)
    assert code == 0
    assert out.splitlines()[1] == "flowchart TD"
    assert 'approve_deploy ==>|"approved"| deploy' in out


def test_dash_as_the_output_is_stdout(tmp_path: Path) -> None:
    """rt19: `-o -` wrote a file named `-` (and said `wrote -`); `-` is stdout, as for curl,
    tar and most tools that write a file."""
    code, out, err = run(DEPLOYBOT, "-o", "-")
    assert code == 0 and "wrote" not in err, err
    assert out.splitlines()[1] == "flowchart TD"
    code, out, _ = run(DEPLOYBOT, "--format", "dot", "-o", "-")
    assert code == 0 and pydot.graph_from_dot_data(out)
    assert not (tmp_path / "-").exists()


def test_dot_parses_and_the_format_follows_the_output_suffix(tmp_path: Path) -> None:
    code, _, err = run(DEPLOYBOT, "-o", str(tmp_path / "bot.dot"))
    assert code == 0 and "wrote" in err
    (graph,) = pydot.graph_from_dot_data((tmp_path / "bot.dot").read_text())
    assert graph.get_node('"deploy"')


@needs_dot
def test_png_and_svg_files(tmp_path: Path) -> None:
    assert run(DEPLOYBOT, "--format", "png", "-o", str(tmp_path / "a.png"))[0] == 0
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    code, out, _ = run(DEPLOYBOT, "--format", "svg")
    assert code == 0 and out.lstrip().startswith("<?xml")


def test_without_dot_svg_says_how_to_install_graphviz(tmp_path: Path) -> None:
    # A PATH with nothing on it (CliRunner sets it for the call): the lookup finds no `dot`.
    code, out, err = run(DEPLOYBOT, "--format", "svg", env={"PATH": str(tmp_path)})
    assert code == 1
    assert out == ""
    assert "Graphviz" in err and "apt-get install graphviz" in err
    assert "Traceback" not in err


def test_an_agent_with_errors_prints_diagnostics_and_exits_1(tmp_path: Path) -> None:
    broken = tmp_path / "broken.agent"
    broken.write_text(
        'agent broken { start first }\ntype Out {}\ntool first -> Out = "m:f" { next nowhere }\n'
        "final done(Out)\n"
    )
    code, out, err = run(str(broken))
    assert code == 1
    assert out == ""
    assert "error[" in err and "nowhere" in err and "broken.agent:3:" in err


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    log.write_text("[]")
    assert run(DEPLOYBOT, "--thread", "t1", "--events", str(log))[0] == 2
    assert run(DEPLOYBOT, "--format", "gif")[0] == 2
    assert run(str(tmp_path / "missing.agent"))[0] == 1  # a problem with the input: E008


def test_events_file_overlays_the_thread() -> None:
    code, out, _ = run(DEPLOYBOT, "--format", "dot", "--events", str(THREAD_LOG))
    assert code == 0
    (graph,) = pydot.graph_from_dot_data(out)
    here = graph.get_node('"approve_deploy"')[0].get("class").strip('"').split()
    assert {"here", "waiting"} <= set(here)
    assert "errors" in graph.get_node('"deploy"')[0].get("class")


def test_thread_from_the_sqlite_store(tmp_path: Path) -> None:
    agent = load_agent(Path(DEPLOYBOT), cache_dir=tmp_path / "cache")
    codec: Codec = agent.codec
    events = [codec.decode_event(item) for item in json.loads(THREAD_LOG.read_text())]
    db = tmp_path / "threads.db"
    store = SqliteStore(db)
    info = ThreadInfo("t-42", "deploybot", DEPLOYBOT, "waiting", "approve_deploy", 9, "t", "t")
    store.create(info, events, codec)
    store.close()

    code, out, err = run(DEPLOYBOT, "--format", "mermaid", "--thread", "t-42", "--db", str(db))
    assert code == 0, err
    assert "class approve_deploy here_waiting" in out
    assert "visited ×3" in out

    # TWELVEFOLD_DB names the store for `graph` as for every other command.
    code, out, err = run(DEPLOYBOT, "--thread", "t-42", env={"TWELVEFOLD_DB": str(db)})
    assert code == 0 and "class approve_deploy here_waiting" in out, err

    code, _, err = run(DEPLOYBOT, "--thread", "nope", "--db", str(db))
    assert code == 1 and "nope" in err
    code, _, err = run(DEPLOYBOT, "--thread", "t-42", "--db", str(tmp_path / "none.db"))
    assert code == 1 and "no thread store" in err


def test_an_event_log_for_another_agent_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    log.write_text(json.dumps([{"kind": "started", "step": "decide", "input": "x"}, {"kind": "?"}]))
    code, _, err = run(DEPLOYBOT, "--events", str(log))
    assert code == 1 and "does not decode" in err


def test_a_log_the_reducer_refuses_is_drawn_up_to_there_with_a_warning(tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    events = [*json.loads(THREAD_LOG.read_text())[:2], {"kind": "notified", "step": "done"}]
    log.write_text(json.dumps(events))
    code, out, err = run(DEPLOYBOT, "--format", "mermaid", "--events", str(log))
    assert code == 0, err
    assert "refuses this log at event 3" in err and "was the agent changed?" in err
    assert "class list_tags here" in out


def _store_with(db: Path, info: ThreadInfo, agent_file: str, log: list[dict[str, object]]) -> None:
    agent = load_agent(Path(agent_file), cache_dir=db.parent / "cache")
    store = SqliteStore(db)
    store.create(info, [agent.codec.decode_event(item) for item in log], agent.codec)
    store.close()


def _a_cancelled_thread(tmp_path: Path) -> Path:
    """A store holding deploybot thread `t-9`, cancelled while it waited for approval."""
    db = tmp_path / "threads.db"
    cancelled = {"kind": "cancelled", "step": "approve_deploy", "by": "ops"}
    log = [*json.loads(THREAD_LOG.read_text()), cancelled]
    info = ThreadInfo("t-9", "deploybot", DEPLOYBOT, "cancelled", "approve_deploy", 10, "t", "t")
    _store_with(db, info, DEPLOYBOT, log)
    return db


@pytest.mark.parametrize("output_format", ["mermaid", "dot"])
def test_a_cancelled_thread_is_drawn_cancelled(tmp_path: Path, output_format: str) -> None:
    db = _a_cancelled_thread(tmp_path)
    code, out, err = run(DEPLOYBOT, "--format", output_format, "--thread", "t-9", "--db", str(db))
    assert code == 0, err
    assert "cancelled here" in out


@needs_dot
def test_a_cancelled_thread_as_svg(tmp_path: Path) -> None:
    db = _a_cancelled_thread(tmp_path)
    code, _, err = run(DEPLOYBOT, "--thread", "t-9", "--db", str(db), "-o", "x.svg")
    assert code == 0, err
    assert "cancelled here" in (tmp_path / "x.svg").read_text(encoding="utf-8")


def test_another_agents_thread_is_a_one_line_error(tmp_path: Path) -> None:
    """A sub-agent's child thread named on its parent's (or any other agent's) graph."""
    db = tmp_path / "threads.db"
    calculator = str(ROOT / "examples" / "calculator.agent")
    log = [{"kind": "started", "step": "decide", "input": "1+1"}]
    info = ThreadInfo("P~refund-3", "calculator", calculator, "running", "decide", 1, "t", "t")
    _store_with(db, info, calculator, log)
    code, out, err = run(DEPLOYBOT, "--thread", "P~refund-3", "--db", str(db))
    assert code == 1 and out == ""
    assert err.count("\n") == 1, err
    assert "P~refund-3" in err and "`calculator`" in err and "`deploybot`" in err


def _tangle(folder: Path, states: int = 200) -> Path:
    """An agent whose picture Graphviz's `dot` takes minutes to lay out: `states` steps,
    each with three edges to far-off states (600 edges that cross everywhere)."""
    (folder / "prompts").mkdir(exist_ok=True)
    (folder / "prompts" / "ok.j2").write_text("ok")
    lines = ["agent a { start s0 max_steps 1000 }", "type A { x: int }", "type B { x: int }"]
    lines.append("type C { x: int }")
    for i in range(states):
        a, b = (i * 37 + 11) % states, (i * 91 + 53) % states
        lines.append(
            f'llm s{i} -> A | B | C {{ prompt "ok.j2" on A -> s{a} on B -> s{b} on C -> done }}'
        )
    lines.append("final done")
    path = folder / "tangle.agent"
    path.write_text("\n".join(lines) + "\n")
    return path


@needs_dot
def test_dot_that_runs_past_its_time_limit_is_stopped_with_a_one_line_error(
    tmp_path: Path,
) -> None:
    agent = _tangle(tmp_path)
    code, _, err = run(str(agent), "-o", str(tmp_path / "x.svg"), "--dot-timeout", "1")
    assert code == 1
    assert not (tmp_path / "x.svg").exists()
    (line,) = [line for line in err.splitlines() if line.startswith("error")]
    assert line == err.splitlines()[-1]  # after the agent's warnings (W801: it is big)
    assert line.startswith("error: Graphviz's `dot` did not finish within 1 s")
    assert "--format dot" in line and "--format mermaid" in line


@needs_dot
def test_render_image_stops_dot_at_its_time_limit(tmp_path: Path) -> None:
    from twelvefold.compiler import compile_file
    from twelvefold.compiler.render import GraphvizTimedOut, graph_view, render_image, to_dot

    program = compile_file(_tangle(tmp_path), generate_code=False).program
    assert program is not None
    with pytest.raises(GraphvizTimedOut):
        render_image(to_dot(graph_view(program)), "svg", timeout=0.5)


def test_a_time_limit_that_is_not_a_positive_number_is_a_usage_error() -> None:
    code, _, err = run(DEPLOYBOT, "--format", "svg", "--dot-timeout", "0")
    assert code == 2 and "Invalid value for '--dot-timeout'" in err


@pytest.mark.parametrize("seconds", ["nan", "inf", "1e308", "86401", "-inf"])
def test_a_time_limit_that_is_not_finite_or_is_absurd_is_a_usage_error(seconds: str) -> None:
    """`nan`, `inf` and `1e308` ended in a traceback (found by a red team)."""
    code, _, err = run(DEPLOYBOT, "--format", "svg", "--dot-timeout", seconds)
    assert code == 2, err
    assert "Invalid value for '--dot-timeout'" in err
    assert "Traceback" not in err


def test_a_picture_write_cut_short_leaves_the_picture_before_it(tmp_path: Path) -> None:
    """A review found `graph -o` wrote in place: a write that stopped halfway (a full
    disk, a kill) left part of the new picture where the old one was."""
    import subprocess
    import sys

    from tests.test_cli_build import _file_size_limit

    picture = tmp_path / "bot.mmd"
    picture.write_text("the picture before\n")
    result = subprocess.run(
        [sys.executable, "-m", "twelvefold", "graph", DEPLOYBOT, "-o", str(picture)],
        capture_output=True, text=True, preexec_fn=lambda: _file_size_limit(100),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"error: cannot use {picture}: File too large\n", result.stderr
    assert picture.read_text() == "the picture before\n"
    assert [path.name for path in tmp_path.iterdir()] == ["bot.mmd"]  # no temporary left


def test_a_picture_named_through_a_link_is_written_where_it_points(tmp_path: Path) -> None:
    target = tmp_path / "real.mmd"
    target.write_text("old\n")
    (tmp_path / "link.mmd").symlink_to(target)
    code, _, err = run(DEPLOYBOT, "-o", str(tmp_path / "link.mmd"))
    assert code == 0, err
    assert (tmp_path / "link.mmd").is_symlink()
    assert "flowchart TD" in target.read_text()


@pytest.mark.parametrize(
    ("encoding", "said"),
    [
        ("utf-16", "is not UTF-8 (byte 0 of "),  # its byte order mark, 0xff
        ("utf-16-le", "is not UTF-8 (byte 1 of "),  # the NUL after `[`
        ("utf-32-be", "is not UTF-8 (byte 0 of "),
        ("latin-1", "is not UTF-8 (byte 12 of "),  # the é of `dé`
        ("utf-8-sig", "starts with a byte order mark"),
    ],
)
def test_an_event_log_that_is_not_utf_8_is_said_to_be_so(
    tmp_path: Path, encoding: str, said: str
) -> None:
    """rt15 #9: a log in UTF-16 was blamed on the agent (`the event log does not decode
    for this agent: expected value at line 1 column 1`). An event log is JSON, UTF-8 and
    nothing else (RFC 8259, section 8.1), as the server says of a body."""
    log = tmp_path / "log.json"
    text = json.dumps([{"kind": "dé"}], ensure_ascii=False)
    log.write_bytes(text.encode(encoding))
    result = CliRunner().invoke(cli, ["graph", DEPLOYBOT, "--events", str(log)])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {log} {said}"), result.stderr
    assert result.stderr.count("\n") == 1 and "RFC 8259" in result.stderr
    assert "agent" not in result.stderr and "Traceback" not in result.output
