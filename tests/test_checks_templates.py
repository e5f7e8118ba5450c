"""Template analysis (template_vars.py) and the template checks built on it."""

from __future__ import annotations

from pathlib import Path

from twelvefold.compiler import compile_text
from twelvefold.compiler.prompts import PromptDirectory
from twelvefold.compiler.template_vars import VariableUse, analyse


def paths(source: str) -> set[tuple[str, ...]]:
    analysis = analyse(source)
    assert analysis.problem is None
    return {use.path for use in analysis.uses}


def test_free_variables_with_their_nested_paths() -> None:
    assert paths("{{ commit.sha }} by {{ commit.author.name }}") == {
        ("commit", "sha"),
        ("commit", "author", "name"),
    }
    assert paths('{{ commit["sha"] }}') == {("commit", "sha")}
    assert paths("{{ items[0].name }}") == {("items",)}
    assert paths("{{ tags | join(', ') }}") == {("tags",)}


def test_names_the_template_binds_are_not_free() -> None:
    assert paths("{% for t in tags %}{{ t.name }}{{ loop.index }}{% endfor %}") == {("tags",)}
    assert paths("{% set x = 1 %}{{ x }}{{ range(3) }}") == set()
    assert paths("{% macro m(a) %}{{ a.b }}{% endmacro %}") == set()


def test_a_name_bound_after_a_free_use_is_checked_by_name_only() -> None:
    assert paths("{{ x.y }}{% set x = 1 %}") == {("x",)}


def test_lines_are_the_template_lines() -> None:
    analysis = analyse("hello\n\n{{ first }}\n{% if a %}\n{{ b.c }}{% endif %}")
    assert list(analysis.uses) == [
        VariableUse(("first",), 3),
        VariableUse(("a",), 4),
        VariableUse(("b", "c"), 5),
    ]


def test_syntax_errors_carry_the_template_line() -> None:
    analysis = analyse("one\ntwo\n{{ a }\nfour")
    assert analysis.problem is not None
    assert analysis.problem.line == 3
    unclosed = analyse("one\n{% if x %}\nthree")
    assert unclosed.problem is not None and "endif" in unclosed.problem.message


AGENT = """agent a { max_steps 10  start decide }
type Commit { sha: string, author: Author? }
type Author { name: string }
type Release { commit: Commit, notes: list[string] }
type Done { message: string }
llm decide -> Release | Done {
  prompt "decide.j2"
  on Release -> confirm
  on Done -> done
}
approval confirm(Release) {
  ask "ASK"
  on approved -> done
  on rejected -> decide
}
final done
"""


def ask_diagnostics(ask: str, tmp_path: Path) -> list[tuple[str, int, int]]:
    (tmp_path / "decide.j2").write_text("{{ context }}", encoding="utf-8")
    text = AGENT.replace('"ASK"', f'"{ask}"')
    compiled = compile_text(
        text, "a.agent", load_prompt=PromptDirectory(tmp_path), generate_code=False
    )
    return [(d.code, d.span.line, d.span.column) for d in compiled.diagnostics]


def test_ask_reads_nested_fields_of_the_incoming_type(tmp_path: Path) -> None:
    ask = "Release {{ commit.sha }} by {{ commit.author.name }} ({{ notes | length }})"
    assert ask_diagnostics(ask, tmp_path) == []


def test_unknown_nested_field_points_at_the_variable(tmp_path: Path) -> None:
    found = ask_diagnostics("Release {{ commit.author.email }}?", tmp_path)
    column = AGENT.splitlines()[11].index('"ASK"') + 1 + len('"Release {{ ')
    assert found == [("E403", 12, column)]


def test_ask_syntax_error_is_reported_on_the_step_line(tmp_path: Path) -> None:
    assert [c for c, _, _ in ask_diagnostics("{% if commit %}x", tmp_path)] == ["E702"]


def test_prompt_files_are_checked_where_the_prompt_is_named(tmp_path: Path) -> None:
    (tmp_path / "decide.j2").write_text("{{ context }}\n{{ lats }}", encoding="utf-8")
    compiled = compile_text(
        AGENT.replace('"ASK"', '"ok"'),
        "a.agent",
        load_prompt=PromptDirectory(tmp_path),
        generate_code=False,
    )
    [found] = compiled.diagnostics
    assert (found.code, found.span.line) == ("E703", 7)
    assert "line 2" in found.message and "`last`" in found.help


def test_render_templates_in_the_context_block(tmp_path: Path) -> None:
    (tmp_path / "decide.j2").write_text("{{ context }}", encoding="utf-8")
    (tmp_path / "event.j2").write_text("{{ step }}: {{ value }} {{ secret }}", encoding="utf-8")
    text = AGENT.replace('"ASK"', '"ok"').replace(
        "start decide }",
        'start decide context { render confirm "event.j2" render decide "no.j2" } }',
    )
    compiled = compile_text(
        text, "a.agent", load_prompt=PromptDirectory(tmp_path), generate_code=False
    )
    assert sorted(d.code for d in compiled.diagnostics) == ["E701", "E703"]
