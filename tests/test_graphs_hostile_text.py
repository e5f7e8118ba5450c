"""Text in an agent that no picture format may take raw: a control character, a character
XML 1.0 forbids (`\\ufffe`), a C1 control or a bidi override, each written with an escape
the language allows in any string (an agent's or a type's description, a model name, a
guard's string). `check` accepts them; every `graph` format draws them as visible
`\\uXXXX` text, through the real `dot` for SVG and PNG, and nothing raw reaches stdout or
stderr (an ESC there would drive the user's terminal)."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pydot
import pytest
from click.testing import CliRunner

from twelvefold.cli import cli
from twelvefold.compiler import compile_text
from twelvefold.compiler.program import PromptFile
from twelvefold.compiler.render import graph_view, render_image, to_dot

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's `dot` is not on PATH (`make system-deps` installs Debian graphviz)",
)

ESCAPES = [
    "\\u0001", "\\b", "\\f", "\\u000b", "\\u001f", "\\r", "\\u007f", "\\u0085", "\\u009b",
    "\\u202e", "\\u2028", "\\ufffe", "\\uffff", "\\u001b]0;pwned\\u0007",
]  # fmt: skip
"""As written in the `.agent` file (a lone surrogate is refused by `check`: E005)."""

RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\ud800-\udfff\ufffe\uffff]")
"""What must not come out of `graph` raw."""


def agent_text(escape: str) -> str:
    return f"""
agent hostile "Desc {escape} end" {{
  input string
  max_steps 10
  start think
}}
type Again "Again {escape}" {{ note: string }}
type Done {{ note: string }}
llm think -> Again | Done {{
  prompt "think.j2"
  model "m{escape}x"
  on Again if note == "{escape}" -> think
  on Again -> think
  on Done -> done
}}
final done(Done)
"""


@pytest.fixture(autouse=True)
def in_a_scratch_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def write_agent(folder: Path, escape: str) -> Path:
    (folder / "prompts").mkdir(exist_ok=True)
    (folder / "prompts" / "think.j2").write_text("x {{ input }}")
    path = folder / "hostile.agent"
    path.write_text(agent_text(escape))
    return path


def graph(*args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(cli, ["graph", *args], catch_exceptions=False)
    return result.exit_code, result.stdout_bytes, result.stderr


@pytest.mark.parametrize("escape", ESCAPES)
@pytest.mark.parametrize("output_format", ["mermaid", "dot"])
def test_text_formats_show_every_character_visibly(
    tmp_path: Path, escape: str, output_format: str
) -> None:
    code, out, err = graph(str(write_agent(tmp_path, escape)), "--format", output_format)
    assert code == 0, err
    text = out.decode("utf-8")  # a lone surrogate would not encode
    assert not RAW.search(text) and not RAW.search(err)
    if output_format == "dot":
        (parsed,) = pydot.graph_from_dot_data(text)
        assert parsed.get_name() == '"hostile"'
        assert "Desc \\u" in text  # drawn as visible text, not dropped


@needs_dot
@pytest.mark.parametrize("escape", ESCAPES)
def test_svg_through_dot_is_valid_xml_and_shows_the_character(tmp_path: Path, escape: str) -> None:
    code, out, err = graph(str(write_agent(tmp_path, escape)), "--format", "svg")
    assert code == 0, err
    assert not RAW.search(err)
    svg = out.decode("utf-8")
    ET.fromstring(svg)  # well-formed: no character XML 1.0 forbids
    assert not RAW.search(svg)
    assert "Desc \\u" in svg  # drawn as visible text, not dropped


@needs_dot
@pytest.mark.parametrize("escape", ["\\u0001", "\\ufffe", "\\u001b]0;pwned\\u0007"])
def test_png_through_dot(tmp_path: Path, escape: str) -> None:
    code, _, err = graph(str(write_agent(tmp_path, escape)), "-o", str(tmp_path / "g.png"))
    assert code == 0, err
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")


@needs_dot
def test_the_inbox_graph_path_draws_them_too() -> None:
    """The thread page's picture (server/inbox.py) is `render_image(to_dot(...))`."""
    for escape in ESCAPES:
        compilation = compile_text(
            agent_text(escape),
            "hostile.agent",
            load_prompt=lambda name: PromptFile(name, Path(name), "x"),
            generate_code=False,
        )
        assert compilation.program is not None, compilation.diagnostics
        ET.fromstring(render_image(to_dot(graph_view(compilation.program)), "svg"))


@needs_dot
def test_a_lone_surrogate_reaching_the_view_is_drawn_too() -> None:
    """`check` refuses one in a string (E005), but the renderers do not rely on it: UTF-8
    cannot hold it, so `dot` could not even be handed the text."""
    compilation = compile_text(
        agent_text("x"),
        "hostile.agent",
        load_prompt=lambda name: PromptFile(name, Path(name), "x"),
        generate_code=False,
    )
    assert compilation.program is not None
    view = replace(graph_view(compilation.program), description="a \ud800 b")
    assert "a \\ud800 b" in to_dot(view)
    ET.fromstring(render_image(to_dot(view), "svg"))


# ---- when `dot` itself fails -------------------------------------------------------------


def fake_dot(folder: Path, script: str) -> dict[str, str]:
    """An environment whose PATH finds `script` as `dot` first."""
    bin_folder = folder / "fakebin"
    bin_folder.mkdir()
    dot = bin_folder / "dot"
    dot.write_text("#!/bin/sh\n" + script)
    dot.chmod(0o755)
    return {"PATH": f"{bin_folder}:/usr/bin:/bin"}


def graph_with(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["graph", *args], env=env, catch_exceptions=False)
    return result.exit_code, result.stderr


EXAMPLE = str(Path(__file__).resolve().parent.parent / "examples" / "calculator.agent")


def test_a_broken_graphviz_is_not_called_a_bug_in_twelvefold(tmp_path: Path) -> None:
    env = fake_dot(
        tmp_path, "printf '\\033]0;pwned\\007\\033[2JERR\\nsecond line\\n' >&2\nexit 3\n"
    )
    code, err = graph_with(env, EXAMPLE, "--format", "svg")
    assert code == 1
    (line,) = err.splitlines()
    assert "bug in twelvefold" not in line
    assert line.startswith("error: Graphviz's `dot` exited with 3: \\u001b]0;pwned\\u0007")
    assert "ERR" in line and "second line" not in line  # its first line, escaped
    assert "Graphviz install" in line and "--format mermaid" in line
    assert not RAW.search(err)


def test_a_dot_killed_by_a_signal_says_so(tmp_path: Path) -> None:
    code, err = graph_with(fake_dot(tmp_path, "kill -9 $$\n"), EXAMPLE, "--format", "svg")
    assert code == 1
    assert err.startswith("error: Graphviz's `dot` was killed by signal 9 (it printed nothing)")
    assert "bug in twelvefold" not in err


@needs_dot
def test_dot_refusing_only_our_graph_is_our_bug(tmp_path: Path) -> None:
    """A `dot` that draws a one-node graph but refuses this one: then the DOT twelvefold
    wrote is at fault, and the message says so."""
    real = shutil.which("dot")
    script = (
        'input=$(cat)\ncase "$input" in\n'
        '  *calculator*) echo "Error: syntax error in line 1" >&2; exit 1;;\nesac\n'
        f'printf "%s" "$input" | {real} "$@"\n'
    )
    code, err = graph_with(fake_dot(tmp_path, script), EXAMPLE, "--format", "svg")
    assert code == 1
    assert err.startswith("error: Graphviz's `dot` exited with 1: Error: syntax error in line 1")
    assert "this is a bug in twelvefold" in err
