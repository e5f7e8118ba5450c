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


def _sparse(path: Path, size: int) -> None:
    """A file of `size` bytes that takes no room on disk (a hole)."""
    with path.open("wb") as file:
        file.truncate(size)


def test_a_cassette_larger_than_the_cap_is_one_line(tmp_path: Path) -> None:
    """An 8 GB cassette was read whole: a MemoryError traceback (or the OOM killer)."""
    from twelvefold.runtime.localfiles import MAX_FILE_BYTES

    _agent(tmp_path)
    _sparse(tmp_path / "huge.jsonl", MAX_FILE_BYTES + 1)
    done = twelvefold("run", "a.agent", "--input", "x", "--cassette", "huge.jsonl", cwd=tmp_path)
    assert_one_line_error(done, "huge.jsonl", "larger than 256 MiB")


def test_events_larger_than_the_cap_is_one_line(tmp_path: Path) -> None:
    from twelvefold.runtime.localfiles import MAX_FILE_BYTES

    _sparse(tmp_path / "e.json", MAX_FILE_BYTES + 1)
    done = twelvefold("graph", str(DEPLOYBOT), "--events", "e.json", cwd=tmp_path)
    assert_one_line_error(done, "e.json", "larger than 256 MiB")


def test_record_to_a_fifo_or_a_device_is_refused_before_any_call(tmp_path: Path) -> None:
    """A FIFO with no reader hung the run after the model call; /dev/full ended it with
    `error: OSError: [Errno 28]...` and the thread left at `started`: both are refused
    before the thread starts, naming the file."""
    _agent(tmp_path)
    os.mkfifo(tmp_path / "pipe.jsonl")
    for target in ("pipe.jsonl", "/dev/full"):
        done = twelvefold(
            "run", "a.agent", "--input", "x", "--record", target, "--db", "t.db", cwd=tmp_path
        )
        assert_one_line_error(done, target, "not a regular file")
    assert not (tmp_path / "t.db").exists()  # no thread was started
