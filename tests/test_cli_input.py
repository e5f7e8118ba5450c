"""Inputs that once ended the compiler in a traceback or a hang (issue 9, §4), each now a
diagnostic with a position and a help line; and the costs that were quadratic, now bounded.

The file-level codes (E007, E008) are tested here through the CLI, since no text in
tests/invalid/ can show them; the text-level ones (E005, E009) have invalid programs too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from benchmarks.synthetic import hub_agent, synthetic_agent
from twelvefold.cli import cli
from twelvefold.compiler import PromptFile, compile_text, diagnostics
from twelvefold.compiler.checks import typeflow
from twelvefold.compiler.limits import MAX_FILE_BYTES, MAX_STRING_CHARS
from twelvefold.runtime.loading import import_file

OK = """\
agent a { start decide }
type Done "DESCRIPTION" { message: string }
llm decide -> Done {
  prompt "ok.j2"
  on Done -> done
}
final done(Done)
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "ok.j2").write_text("{{ context }}\n")
    return tmp_path


def check_json(path: Path) -> tuple[Result, list[dict[str, object]]]:
    result = CliRunner().invoke(cli, ["check", "--format", "json", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result, json.loads(result.stdout)


def prompt(name: str) -> PromptFile:
    return PromptFile(name, Path(name), "{{ context }}\n")


def codes(text: str) -> list[tuple[int, int, str]]:
    found = compile_text(text, "a.agent", load_prompt=prompt, generate_code=False).diagnostics
    return [(d.span.line, d.span.column, d.code) for d in found if d.is_error]


# ---- the file itself ---------------------------------------------------------------------


def test_bytes_that_are_not_utf8_are_e007_at_their_line_and_column(folder: Path) -> None:
    path = folder / "a.agent"
    path.write_bytes(OK.replace("message", "mess\xe9ge").encode("latin-1"))
    result, (diagnostic,) = check_json(path)
    assert result.exit_code == 1
    assert (diagnostic["code"], diagnostic["line"], diagnostic["column"]) == ("E007", 2, 31)
    assert "byte 0xe9" in str(diagnostic["message"]) and diagnostic["help"]
    text = CliRunner().invoke(cli, ["check", str(path)])
    assert text.output.startswith(f"{path}:2:31: error[E007]: this file is not UTF-8 text")


def test_a_byte_order_mark_is_accepted(folder: Path) -> None:
    path = folder / "a.agent"
    path.write_bytes(b"\xef\xbb\xbf" + OK.encode())
    result = CliRunner().invoke(cli, ["compile", str(path), "-o", str(folder / "out")])
    assert result.exit_code == 0, result.output
    assert import_file(folder / "out" / "a.py", "_bom_agent").AGENT.name == "a"


def test_a_lone_surrogate_in_text_given_to_the_library_is_e007() -> None:
    assert codes(OK.replace("message", "mess\ud800age")) == [(2, 31, "E007")]


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge"])
def test_files_that_cannot_be_read_whole_are_refused_unread(folder: Path, kind: str) -> None:
    if kind == "fifo":  # no writer: reading it would block forever
        path = folder / "a.agent"
        os.mkfifo(path)
    elif kind == "huge":
        path = folder / "a.agent"
        with path.open("wb") as file:
            file.truncate(MAX_FILE_BYTES + 1)
    else:
        path = Path("/dev/zero")  # endless: reading it would fill the memory
    result, (diagnostic,) = check_json(path)
    assert result.exit_code == 1
    assert (diagnostic["code"], diagnostic["line"], diagnostic["column"]) == ("E008", 1, 1)
    expected = "is larger than 1024 KiB" if kind == "huge" else "is not a regular file"
    assert expected in str(diagnostic["message"])


# ---- strings, numbers, nesting ------------------------------------------------------------


def test_a_nul_in_a_prompt_path_is_e005() -> None:
    assert codes(OK.replace('"ok.j2"', '"ok\\u0000.j2"')) == [(4, 10, "E005")]


def test_a_surrogate_pair_is_one_character_and_fine() -> None:
    assert codes(OK.replace("DESCRIPTION", "smile \\ud83d\\ude00")) == []


def test_a_description_ending_in_triple_quotes_compiles_to_a_module_that_imports(
    tmp_path: Path,
) -> None:
    text = OK.replace("DESCRIPTION", 'ends \\"\\"\\"')
    result = compile_text(text, "a.agent", load_prompt=prompt)
    assert result.ok, result.diagnostics
    ((name, module),) = result.files.items()
    (tmp_path / name).write_text(module)
    done = import_file(tmp_path / name, "_quotes_agent").Done
    assert done.__doc__ == 'ends """'


def test_a_string_over_the_limit_is_e009() -> None:
    long = "d" * (MAX_STRING_CHARS + 1)
    assert codes(OK.replace("DESCRIPTION", long)) == [(2, 11, "E009")]
    assert codes(OK.replace("DESCRIPTION", long[:-1])) == []


@pytest.mark.parametrize(
    ("setting", "code"),
    [
        ("timeout " + "9" * 400 + "d", "E009"),  # compiled to `inf`, then NameError
        ("timeout 99999999999999999999999d", "E009"),
        ("timeout 367d", "E009"),
        ("timeout 366d", None),
        ("retry 1" + "0" * 32 + " backoff 1s", "E009"),
    ],
)
def test_durations_and_numbers_are_bounded(setting: str, code: str | None) -> None:
    text = (
        "agent a { start t }\ntype Done { message: string }\n"
        f'tool t -> Done = "tools:t" {{ {setting} next done }}\nfinal done(Done)\n'
    )
    assert [c for _, _, c in codes(text)] == ([code] if code else [])


@pytest.mark.parametrize(
    ("guard", "column"),
    [("not " * 500 + "ok", 142), ("(" * 500 + "ok" + ")" * 500, None)],
)
def test_deep_guards_are_e009_or_fine_never_a_recursion_error(
    guard: str, column: int | None
) -> None:
    text = OK.replace("message: string", "message: string, ok: bool").replace(
        "  on Done -> done", f"  on Done if {guard} -> done\n  on Done -> done"
    )
    assert codes(text) == ([(5, column, "E009")] if column else [])


def test_deep_types_are_e009() -> None:
    deep = "list[" * 300 + "string" + "]" * 300
    assert [c for _, _, c in codes(OK.replace("message: string", f"message: {deep}"))] == ["E009"]


def test_a_huge_number_is_e009_not_a_conversion_error() -> None:
    text = OK.replace("{ start decide }", "{ start decide max_steps " + "9" * 5000 + " }")
    assert codes(text) == [(1, 34, "E009")]


# ---- costs that were quadratic ------------------------------------------------------------


def test_did_you_mean_skips_candidates_that_cannot_be_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 100,000-character unknown name among 1,000 states: no distance is computed at all
    (it took over 300 s), and a short typo still finds its state."""
    calls: list[tuple[str, str]] = []
    real = diagnostics.edit_distance

    def counted(a: str, b: str, bound: int | None = None) -> int:
        calls.append((a, b))
        return real(a, b, bound)

    monkeypatch.setattr(diagnostics, "edit_distance", counted)
    text = synthetic_agent(1000).replace("start decide_0", "start " + "x" * 100_000)
    assert {c for _, _, c in codes(text)} == {"E009"}
    states = [f"decide_{i}" for i in range(1000)] + ["x" * 99_999]
    assert diagnostics.closest("x" * 100_000, states) == []
    assert diagnostics.closest("x" * 64, ["y" * 64 for _ in range(1000)]) == []
    assert calls == []  # the length cap and the letter-count prefilter decided every one
    assert diagnostics.closest("dceide_7", states)[0] == "decide_7"


def test_type_flow_follows_each_edge_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub (one llm step, 1,000 tools) asked what each edge carries 2 million times."""
    calls = 0
    real = typeflow._fixed_type

    def counted(*args: object) -> object:
        nonlocal calls
        calls += 1
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(typeflow, "_fixed_type", counted)
    result = compile_text(hub_agent(200), "hub.agent", generate_code=False)
    assert result.program is not None
    edges = result.program.graph.number_of_edges()
    assert calls <= 3 * edges  # once to follow the edges, at most twice more to judge them


# ---- --format json is one JSON document, usage errors included ------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--format", "json"],
        ["check", "--format", "json", "--no-such-option", "a.agent"],
        ["compile", "--format", "json", "--no-such-option", "a.agent"],
    ],
)
def test_usage_errors_are_a_json_document_with_format_json(
    args: list[str], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(folder)
    (folder / "a.agent").write_text(OK)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    (entry,) = json.loads(result.stdout)
    assert entry["code"] == "usage" and entry["severity"] == "error" and entry["message"]
    assert "--help" in str(entry["help"])
    text = CliRunner().invoke(cli, [a for a in args if "json" not in a and a != "--format"])
    assert text.exit_code == 2 and text.stdout == ""  # without it: click's usage, on stderr


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--format", "json", "missing.agent"],
        ["check", "missing.agent", "--format=json"],
        ["compile", "--format", "json", "missing.agent"],
    ],
)
def test_a_missing_agent_file_is_a_diagnostic_not_a_usage_error(
    args: list[str], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file that cannot be read is a problem with the input (exit 1, E008 with its fix),
    # as every other path a command cannot use; 2 is for a mistaken command line.
    monkeypatch.chdir(folder)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    (entry,) = json.loads(result.stdout)
    assert (entry["code"], entry["path"]) == ("E008", "missing.agent")


def test_an_unwritable_output_folder_is_one_line_or_one_json_entry(folder: Path) -> None:
    source = folder / "a.agent"
    source.write_text(OK)
    blocked = folder / "file"
    blocked.write_text("a file where the folder should be")
    result = CliRunner().invoke(cli, ["compile", str(source), "-o", str(blocked / "out")])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: cannot write to {blocked / 'out'}")
    result = CliRunner().invoke(
        cli, ["compile", "--format", "json", str(source), "-o", str(blocked / "out")]
    )
    assert result.exit_code == 1
    (entry,) = json.loads(result.stdout)
    assert entry["code"] == "usage" and "cannot write" in str(entry["message"])
