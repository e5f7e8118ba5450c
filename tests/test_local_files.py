"""A local file a command reads (`graph --events`, `run --cassette`) that is nested past
reason or is not a regular file is one line and exit 1: never a RecursionError traceback,
never a command blocked on a FIFO until it is killed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.cli import twelvefold

ROOT = Path(__file__).resolve().parents[1]
DEPLOYBOT = ROOT / "examples" / "deploybot.agent"
DEEP = "[" * 100_000 + "]" * 100_000


def assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: "), line
    for word in words:
        assert word in line, line


def test_events_nested_100000_deep_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "e.json").write_text(DEEP)
    done = twelvefold("graph", str(DEPLOYBOT), "--events", "e.json", cwd=tmp_path)
    assert_one_line_error(done, "e.json", "nested too deeply")


def test_events_from_a_fifo_is_refused_without_reading(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    done = twelvefold("graph", str(DEPLOYBOT), "--events", "pipe", cwd=tmp_path)
    assert_one_line_error(done, "pipe", "not a regular file")


def _agent(folder: Path) -> None:
    (folder / "prompts").mkdir()
    (folder / "prompts" / "ok.j2").write_text("{{ input }}")
    (folder / "a.agent").write_text(
        "agent a { input string start decide }\ntype D { tag: string }\n"
        'llm decide -> D { prompt "ok.j2" on D -> done }\nfinal done(D)\n'
    )


def test_a_cassette_nested_100000_deep_is_one_line(tmp_path: Path) -> None:
    _agent(tmp_path)
    entry = '{"agent": "a", "step": "decide", "type": "D", "output": {"tag": ' + DEEP + "}}\n"
    (tmp_path / "deep.jsonl").write_text(entry)
    done = twelvefold("run", "a.agent", "--input", "x", "--cassette", "deep.jsonl", cwd=tmp_path)
    assert_one_line_error(done, "deep.jsonl:1", "nested too deeply")


def test_a_cassette_that_is_a_fifo_is_refused_without_reading(tmp_path: Path) -> None:
    _agent(tmp_path)
    os.mkfifo(tmp_path / "pipe.jsonl")
    done = twelvefold("run", "a.agent", "--input", "x", "--cassette", "pipe.jsonl", cwd=tmp_path)
    assert_one_line_error(done, "pipe.jsonl", "not a regular file")
