"""What the compiler's commands print about files is escaped for the terminal.

A file name, an identifier, a template's name or a description is the user's (or an
attacker's: a repository cloned to review it). Printed raw, a line break in one starts a
line that reads as twelvefold's own output (`error[E101]: ...` forged under the real
diagnostic), and an ANSI escape recolours or clears the screen. Each case runs the real
CLI in a subprocess and reads what reaches the terminal; `--format json` keeps the raw
value (JSON escapes it itself).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import twelvefold

ROOT = Path(__file__).resolve().parents[1]
FORGED = "error[E999]: forged"
"""What a hostile name tries to print as a line of its own."""
ESC = "\x1b[2J"
"""Clears the screen when printed raw."""

AGENT = """agent greet {{ input string start decide }}
type Done {{ message: string }}
llm decide -> Done {{ prompt "{prompt}" on Done -> done }}
final done(Done)
"""


def agent_with_its_template(agent: Path) -> None:
    """An agent that compiles, at `agent`, with its template in `prompts/` beside it."""
    (agent.parent / "prompts").mkdir()
    (agent.parent / "prompts" / "p.j2").write_text("hello {{ input }}")
    agent.write_text(AGENT.format(prompt="p.j2"))


def assert_not_forged(output: str) -> None:
    """No line of `output` is one a name made up, and no raw control character is left."""
    assert not any(line.startswith(FORGED) for line in output.splitlines()), output
    assert "\x1b" not in output, output


def test_a_suggested_template_name_with_a_line_break_stays_on_the_help_line(
    tmp_path: Path,
) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / f"ab\n{FORGED}.j2").write_text("hello")
    (tmp_path / "a.agent").write_text(AGENT.format(prompt=f"abx{FORGED}.j2"))

    shown = twelvefold("check", "a.agent", cwd=tmp_path)

    assert shown.returncode == 1
    assert_not_forged(shown.stderr)
    assert f'  = help: did you mean "ab\\n{FORGED}.j2"?' in shown.stderr.splitlines()
    as_json = twelvefold("check", "--format", "json", "a.agent", cwd=tmp_path)
    (diagnostic,) = json.loads(as_json.stdout)
    assert diagnostic["help"] == f'did you mean "ab\n{FORGED}.j2"?'  # the raw name, as data


def test_an_agent_file_name_with_a_line_break_and_an_escape_is_shown_escaped(
    tmp_path: Path,
) -> None:
    name = f"x{ESC}\n{FORGED}.agent"
    (tmp_path / "prompts").mkdir()
    (tmp_path / name).write_text(AGENT.format(prompt="missing.j2"))

    shown = twelvefold("check", name, cwd=tmp_path)

    assert shown.returncode == 1
    assert_not_forged(shown.stderr)
    header = shown.stderr.splitlines()[0]
    assert header.startswith(f"x\\u001b[2J\\n{FORGED}.agent:3:29: error[E701]: ")
    as_json = twelvefold("check", "--format", "json", name, cwd=tmp_path)
    assert json.loads(as_json.stdout)[0]["path"] == name


def test_a_control_character_in_the_source_line_is_escaped_and_the_caret_follows_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "a.agent").write_text(AGENT.format(prompt=f"no{ESC}.j2"))

    shown = twelvefold("check", "a.agent", cwd=tmp_path)

    assert shown.returncode == 1
    assert_not_forged(shown.stderr)
    lines = shown.stderr.splitlines()
    source = next(line for line in lines if line.startswith("3 | "))
    caret = lines[lines.index(source) + 1]
    assert source == '3 | llm decide -> Done { prompt "no\\u001b[2J.j2" on Done -> done }'
    start = source.index("\\u001b")
    assert caret.index("^") == start  # under the control character (E010), as shown
    assert caret[start:].startswith("^" * len("\\u001b") + " ")


def test_compile_and_compile_check_print_the_output_folder_escaped(tmp_path: Path) -> None:
    agent_with_its_template(tmp_path / "a.agent")
    folder = f"out{ESC}\n{FORGED}"

    wrote = twelvefold("compile", "a.agent", "-o", folder, cwd=tmp_path)

    assert wrote.returncode == 0, wrote.stderr
    assert_not_forged(wrote.stderr)
    assert f"wrote out\\u001b[2J\\n{FORGED}/greet.py" in wrote.stderr.splitlines()
    (tmp_path / folder / "greet.py").write_text("# edited\n")
    stale = twelvefold("compile", "--check", "a.agent", "-o", folder, cwd=tmp_path)
    assert stale.returncode == 1
    assert_not_forged(stale.stderr)
    assert stale.stderr.startswith(f"stale: out\\u001b[2J\\n{FORGED}/greet.py ")
    (tmp_path / folder / "greet.py").unlink()
    missing = twelvefold("compile", "--check", "a.agent", "-o", folder, cwd=tmp_path)
    assert missing.returncode == 1
    assert_not_forged(missing.stderr)
    assert missing.stderr.startswith(f"missing: out\\u001b[2J\\n{FORGED}/greet.py ")


def test_graph_prints_the_file_it_wrote_escaped(tmp_path: Path) -> None:
    agent_with_its_template(tmp_path / "a.agent")
    output = f"g{ESC}\n{FORGED}.mmd"

    drawn = twelvefold("graph", "a.agent", "-o", output, cwd=tmp_path)

    assert drawn.returncode == 0, drawn.stderr
    assert_not_forged(drawn.stderr)
    assert drawn.stderr.splitlines() == [f"wrote g\\u001b[2J\\n{FORGED}.mmd"]


def test_test_report_prints_the_agent_file_name_escaped(tmp_path: Path) -> None:
    name = f"a{ESC}\n{FORGED}.agent"
    agent_with_its_template(tmp_path / name)

    tested = twelvefold("test", "--examples", "5", "--seed", "1", name, cwd=tmp_path)

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert_not_forged(tested.stdout)
    assert tested.stdout.splitlines()[0].startswith("greet (")
    assert f"a\\u001b[2J\\n{FORGED}.agent" in tested.stdout.splitlines()[0]


def test_load_errors_print_the_agent_file_name_escaped(tmp_path: Path) -> None:
    name = f"gone{ESC}\n{FORGED}.agent"

    previewed = twelvefold("prompt", name, "decide", "--input", "x", cwd=tmp_path)
    assert previewed.returncode == 1
    assert_not_forged(previewed.stderr)
    assert previewed.stderr.splitlines() == [
        f"error: no such file: gone\\u001b[2J\\n{FORGED}.agent"
    ]
    ran = twelvefold("run", name, "--input", "x", cwd=tmp_path)
    assert ran.returncode == 1
    assert_not_forged(ran.stderr)
    assert ran.stderr.splitlines() == [f"error: no such file: gone\\u001b[2J\\n{FORGED}.agent"]


def test_graph_prints_a_refused_log_s_step_name_escaped(tmp_path: Path) -> None:
    agent_with_its_template(tmp_path / "a.agent")
    step = f"decide{ESC}\n{FORGED}"
    log = [
        {"kind": "started", "step": "decide", "input": "x"},
        {
            "kind": "model_output",
            "step": step,
            "output": {"type": "Done", "value": {"message": "m"}},
        },
    ]
    (tmp_path / "log.json").write_text(json.dumps(log))

    drawn = twelvefold("graph", "a.agent", "--events", "log.json", cwd=tmp_path)

    assert drawn.returncode == 0, drawn.stderr
    assert_not_forged(drawn.stderr)
    (warning,) = drawn.stderr.splitlines()
    assert f"step `decide\\u001b[2J\\n{FORGED}`" in warning


HOSTILE_DB = f"nope{ESC}\n\r{FORGED}.db"
"""A `--db` path that would clear the screen and print a forged error line below the real one."""


def assert_one_escaped_line(output: str, start: str) -> None:
    assert_not_forged(output)
    assert "\r" not in output, output
    (line,) = [line for line in output.splitlines() if line.startswith(start)]
    assert f"nope\\u001b[2J\\n\\u000d{FORGED}.db" in line


def test_a_missing_store_path_is_one_escaped_line_in_every_command(tmp_path: Path) -> None:
    for command in (["show", "abc"], ["stats"], ["threads"]):
        shown = twelvefold(*command, "--db", HOSTILE_DB, cwd=tmp_path)
        assert shown.returncode == 1, (command, shown.stderr)
        assert_one_escaped_line(shown.stderr, "error: no thread store at ")
    agent = ROOT / "examples" / "deploybot.agent"
    prompt = twelvefold(
        "prompt", str(agent), "decide", "--thread", "abc", "--db", HOSTILE_DB, cwd=tmp_path
    )
    assert prompt.returncode == 1, prompt.stderr
    assert_one_escaped_line(prompt.stderr, "error: no thread store at ")  # as every command


def test_run_prints_the_store_it_wrote_to_on_one_escaped_line(tmp_path: Path) -> None:
    folder = tmp_path / f"d{ESC}\n\r{FORGED}"
    ran = twelvefold(
        "run",
        str(ROOT / "examples" / "deploybot.agent"),
        "--input",
        "x",
        "--cassette",
        str(ROOT / "examples" / "cassettes" / "deploybot.jsonl"),
        "--db",
        str(folder / "t.db"),
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert_not_forged(ran.stdout)
    (line,) = [line for line in ran.stdout.splitlines() if line.startswith("  stored in ")]
    assert line.endswith(f"d\\u001b[2J\\n\\u000d{FORGED}/t.db")


def test_the_server_s_log_lines_show_values_escaped_on_one_line() -> None:
    # What `serve` and `worker` log may carry a value from a thread (an error's text, a
    # receiver's answer): a bidi override in it reads "v1.2.3" for "\u202e3.2.1v", and a
    # line break starts a line that reads as a record of its own.
    import subprocess
    import sys

    script = (
        "import logging\n"
        "from twelvefold.commands.output import server_logging\n"
        "server_logging()\n"
        "log = logging.getLogger('twelvefold.server')\n"
        "log.warning('tag %s', '\\u202e3.2.1v\\nERROR: twelvefold.server: forged\\x1b[2J')\n"
        "try:\n"
        "    raise ValueError('bad tag \\u202e3.2.1v')\n"
        "except ValueError:\n"
        "    log.exception('failed')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    lines = done.stderr.splitlines()
    assert lines[0] == (
        "WARNING: twelvefold.server: tag \\u202e3.2.1v\\nERROR: twelvefold.server: forged\\u001b[2J"
    ), lines
    assert lines[1] == "ERROR: twelvefold.server: failed"
    assert lines[-1] == "ValueError: bad tag \\u202e3.2.1v", lines  # a traceback keeps its lines
    assert "\u202e" not in done.stderr and ESC not in done.stderr
