"""Every invalid program in tests/invalid/ reports exactly the diagnostics its comments expect.

A line that must be reported carries a comment such as `# error: E203` (or
`# warning: W301`; several codes may share a line). The test compares the set of
(line, code) pairs reported with the set expected, so a missing diagnostic, one on
the wrong line and an unexpected extra one all fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from twelvefold.compiler import compile_text
from twelvefold.compiler.api import project_settings
from twelvefold.compiler.diagnostics import Diagnostic
from twelvefold.compiler.prompts import PromptDirectory

INVALID = Path(__file__).parent / "invalid"
PROGRAMS = sorted(INVALID.glob("*.agent"))
EXPECTATION = re.compile(r"\b(error|warning|note): ([EW]\d{3})\b")


def expected(text: str) -> set[tuple[int, str, str]]:
    return {
        (number, severity, code)
        for number, line in enumerate(text.splitlines(), 1)
        for severity, code in EXPECTATION.findall(line)
    }


def reported(diagnostics: list[Diagnostic]) -> set[tuple[int, str, str]]:
    return {(d.span.line, d.severity.value, d.code) for d in diagnostics}


def check_file(path: Path) -> list[Diagnostic]:
    text = path.read_text(encoding="utf-8")
    loader = PromptDirectory(INVALID / "prompts")
    return compile_text(
        text,
        path.name,
        load_prompt=loader,
        generate_code=False,
        base_dir=path.parent,
        **project_settings(path)._asdict(),  # tests/invalid/twelvefold.toml
    ).diagnostics


@pytest.mark.parametrize("path", PROGRAMS, ids=[p.stem for p in PROGRAMS])
def test_invalid_program_reports_what_its_comments_expect(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    want = expected(text)
    assert want, f"{path.name} has no `# error: E...` expectation"
    assert reported(check_file(path)) == want


@pytest.mark.parametrize("path", PROGRAMS, ids=[p.stem for p in PROGRAMS])
def test_file_is_named_after_a_code_it_reports(path: Path) -> None:
    code = path.stem.split("_", 1)[0]
    assert code in {c for _, _, c in expected(path.read_text(encoding="utf-8"))}


def test_the_comparison_fails_when_an_expectation_is_wrong(tmp_path: Path) -> None:
    """The harness itself can fail: move an expectation one line and it no longer matches."""
    source = (INVALID / "E104_unknown_state.agent").read_text(encoding="utf-8")
    moved = source.replace("  # error: E104", "").replace(
        "final done(Done)", "final done(Done)  # error: E104"
    )
    broken = tmp_path / "E104_moved.agent"
    broken.write_text(moved, encoding="utf-8")
    assert reported(check_file(broken)) != expected(moved)


def test_all_diagnostics_in_a_file_are_reported_not_just_the_first() -> None:
    text = "\n".join(
        [
            "agent a { start decide }",
            'type Done { message: string, env: "a" | "b" }',
            "llm decide -> Done | Missing {",
            '  prompt "ok.j2"',
            '  on Done if env == "c" -> nowhere',
            "  on Done -> done",
            "}",
            'tool t -> Done = "not a path" { next decide }',
            "final done(Done)",
        ]
    )
    diagnostics = compile_text(
        text, "many.agent", load_prompt=PromptDirectory(INVALID / "prompts"), generate_code=False
    ).diagnostics
    codes = {d.code for d in diagnostics if d.is_error}
    assert {"E105", "E104", "E206", "E108"} <= codes
