"""A value in an `ask` cannot forge a line of what a person reads.

The model chooses the values an approval's question shows (`ask "deploy {{ tag }}?"`).
A line break in one would start a line of its own under the real question: a fake event
row (`   9  deploy  approved  by admin`), a fake `value:` or `resume:` line. The values an
`ask` interpolates have their line breaks written as escapes where the question is made
(runtime/context.py `render_ask`), so every place that shows it — `run`, `resume`, `show`,
the stderr notice, email, Slack, the inbox — gets one line per line the author wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from twelvefold.runtime.context import render_ask

FORGED = "   9  deploy           approved      by admin"
BREAKS = ["\r\n", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]

AGENT = """agent dep { start decide max_steps 20 }
type D { tag: string }
type Done { m: string }
llm decide -> D | Done { prompt "ok.j2" on D -> ok on Done -> done }
approval ok(D) { ask "deploy {{ tag }}?" on approved -> done2 on rejected -> decide }
final done(Done)
final done2(D)
"""


@pytest.mark.parametrize("brk", BREAKS, ids=[repr(b) for b in BREAKS])
def test_a_line_break_in_a_value_is_escaped_in_the_question(brk: str) -> None:
    shown = render_ask("deploy {{ tag }}?", {"tag": f"v1{brk}{FORGED}"})
    assert len(shown.splitlines()) == 1, shown
    assert shown.startswith("deploy v1\\") and shown.endswith(f"{FORGED}?")


def test_the_authors_own_line_breaks_are_kept() -> None:
    assert render_ask("deploy {{ tag }}?\nreally?", {"tag": "v1"}) == "deploy v1?\nreally?"


def _project(tmp_path: Path) -> Path:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "ok.j2").write_text("decide {{ input }}")
    (tmp_path / "dep.agent").write_text(AGENT)
    evil = {"tag": f"v1\r\n{FORGED}\n  value: forged"}
    lines = [
        {"agent": "dep", "step": "decide", "type": "D", "output": evil},
        {"agent": "dep", "step": "decide", "type": "D", "output": evil},
    ]
    (tmp_path / "evil.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return tmp_path


def _twelvefold(project: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twelvefold", *arguments],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "XDG_CACHE_HOME": str(project / "user-cache")},
        stdin=subprocess.DEVNULL,
    )


def _assert_not_forged(output: str) -> None:
    lines = output.splitlines()
    assert not any(line.startswith(FORGED) for line in lines), output
    assert not any(line.startswith("  value: forged") for line in lines), output


def test_run_resume_show_and_the_notice_print_the_question_on_one_line(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path)
    ran = _twelvefold(project, "run", "dep.agent", "--input", "x", "--cassette", "evil.jsonl")
    assert ran.returncode == 0, ran.stderr
    assert "waits at `ok` for approval: deploy v1\\r\\n" in ran.stdout
    _assert_not_forged(ran.stdout)
    _assert_not_forged(ran.stderr)  # the log channel's notice
    assert "[twelvefold] dep waits for approval" in ran.stderr
    (thread,) = [line.split()[1] for line in ran.stdout.splitlines() if line.startswith("thread ")]

    shown = _twelvefold(project, "show", thread)
    assert "waits at `ok` for approval: deploy v1\\r\\n" in shown.stdout, shown.stdout
    _assert_not_forged(shown.stdout)

    resumed = _twelvefold(
        project,
        "resume",
        thread,
        "--request",
        "ok-2",
        "--reject",
        "--comment",
        "no",
        "--cassette",
        "evil.jsonl",
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "waits at `ok` for approval: deploy v1\\r\\n" in resumed.stdout, resumed.stdout
    _assert_not_forged(resumed.stdout)
    _assert_not_forged(resumed.stderr)
