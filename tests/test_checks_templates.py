"""Template analysis (template_vars.py) and the template checks built on it."""

from __future__ import annotations

import itertools
from pathlib import Path

import jinja2
import pytest

from twelvefold.compiler import compile_text
from twelvefold.compiler.prompts import PromptDirectory
from twelvefold.compiler.template_vars import VariableUse, analyse
from twelvefold.runtime.templates import sandboxed


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


CYCLE_AGENT = """agent a { start decide context { render decide "event.j2" } }
type Done { message: string }
llm decide -> Done {
  prompt "decide.j2" judge "judge.j2"
  on Done -> done
}
final done(Done)
"""


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        ({"decide.j2": "{{ context }}{% include 'decide.j2' %}"}, "decide.j2 → decide.j2"),
        ({"decide.j2": "{% extends 'decide.j2' %}"}, "decide.j2 → decide.j2"),
        ({"decide.j2": "{% import 'decide.j2' as me %}"}, "decide.j2 → decide.j2"),
        ({"decide.j2": "{% from 'decide.j2' import m %}"}, "decide.j2 → decide.j2"),
        (
            {
                "decide.j2": "{% include 'a.j2' %}",
                "a.j2": "{% include 'b.j2' %}",
                "b.j2": "{% if x %}{% include 'a.j2' %}{% endif %}",
            },
            "a.j2 → b.j2 → a.j2",
        ),
    ],
)
def test_a_template_that_loads_itself_is_reported_with_its_cycle(
    tmp_path: Path, files: dict[str, str], cycle: str
) -> None:
    """Jinja2 recurses until Python's stack runs out at render time: `check` says so."""
    for name, text in {"judge.j2": "{{ output }}", "event.j2": "{{ value }}", **files}.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    compiled = compile_text(
        CYCLE_AGENT, "a.agent", load_prompt=PromptDirectory(tmp_path), generate_code=False
    )
    found = [d for d in compiled.diagnostics if d.code == "E707"]
    assert [(d.span.line, d.span.column) for d in found] == [(4, 10)]
    assert cycle in found[0].message
    assert "recursive" in found[0].help


def test_a_cycle_is_reported_for_judge_and_render_templates_too(tmp_path: Path) -> None:
    (tmp_path / "decide.j2").write_text("{{ context }}")
    (tmp_path / "judge.j2").write_text("{% include 'judge.j2' %}")
    (tmp_path / "event.j2").write_text("{% extends 'base.j2' %}")
    (tmp_path / "base.j2").write_text("{% include 'event.j2' %}")
    compiled = compile_text(
        CYCLE_AGENT, "a.agent", load_prompt=PromptDirectory(tmp_path), generate_code=False
    )
    shown = sorted((d.code, d.span.line, d.message) for d in compiled.diagnostics if d.is_error)
    assert [(code, line) for code, line, _ in shown] == [("E707", 1), ("E707", 4)]
    assert "event.j2 → base.j2 → event.j2" in shown[0][2]
    assert "judge.j2 → judge.j2" in shown[1][2]


def test_a_template_loaded_twice_without_a_cycle_is_fine(tmp_path: Path) -> None:
    (tmp_path / "decide.j2").write_text(
        "{% include 'part.j2' %}{% include 'part.j2' %}{% include 'other.j2' %}{{ context }}"
    )
    (tmp_path / "other.j2").write_text("{% include 'part.j2' %}")
    (tmp_path / "part.j2").write_text("{{ input }}")
    (tmp_path / "judge.j2").write_text("{% include 'part.j2' %}")
    (tmp_path / "event.j2").write_text("{{ value }}")
    compiled = compile_text(
        CYCLE_AGENT, "a.agent", load_prompt=PromptDirectory(tmp_path), generate_code=False
    )
    assert [d for d in compiled.diagnostics if d.is_error] == []


@pytest.mark.parametrize("cycle", [False, True])
def test_a_long_chain_of_includes_is_checked_without_exhausting_the_stack(
    tmp_path: Path, cycle: bool
) -> None:
    """1,500 templates each including the next: `check` walks them without recursing
    once per template (it raised RecursionError, a traceback, from about 1,000 on)."""
    count = 1500
    for i in range(count - 1):
        (tmp_path / f"t{i}.j2").write_text(f"{{% include 't{i + 1}.j2' %}}")
    (tmp_path / f"t{count - 1}.j2").write_text("{% include 't0.j2' %}" if cycle else "end")
    (tmp_path / "decide.j2").write_text("{{ context }}{% include 't0.j2' %}")
    (tmp_path / "judge.j2").write_text("{{ output }}")
    (tmp_path / "event.j2").write_text("{{ value }}")
    compiled = compile_text(
        CYCLE_AGENT, "a.agent", load_prompt=PromptDirectory(tmp_path), generate_code=False
    )
    found = [d for d in compiled.diagnostics if d.is_error]
    assert [d.code for d in found] == (["E707"] if cycle else [])
    if cycle:  # the chain's ends, and how many templates lie between them
        message = found[0].message
        assert "t0.j2 → t1.j2 → t2.j2 → … 1,495 more … → t1498.j2 → t1499.j2 → t0.j2" in message
        assert len(message) < 400 and len(found[0].label) < 300


def test_an_include_of_a_name_too_long_for_a_file_is_a_missing_template(tmp_path: Path) -> None:
    """A name no file system holds (300 characters in one part) is E701, not a traceback."""
    (tmp_path / "decide.j2").write_text("{{ context }}{% include '" + "L" * 300 + ".j2' %}")
    (tmp_path / "judge.j2").write_text("{{ output }}")
    (tmp_path / "event.j2").write_text("{{ value }}")
    compiled = compile_text(
        CYCLE_AGENT, "a.agent", load_prompt=PromptDirectory(tmp_path), generate_code=False
    )
    assert [d.code for d in compiled.diagnostics if d.is_error] == ["E701"]


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' * 50000000 }}",
        "{{ 50000000 * 'x' }}",
        "{{ 'x' ~ ('y' * 50000000) }}",
        "{{ '%50000000s' % 'x' }}",
        "{{ 'x' | center(50000000) }}",
        "{{ 'x' | indent(50000000, true) }}",
        "{{ [1] | batch(50000000, 0) | list }}",
        "{{ 'ab' | replace('', '" + "x" * 3000 + "') | replace('', '" + "y" * 3000 + "') }}",
        # Filters whose output grows with their input, chained (red team: 1.8 GB, 47 s).
        '{{ \'"""""""""\'' + "|tojson" * 22 + " }}",
        "{{ \"''''\"" + "|pprint" * 22 + " }}",
        '{% autoescape \'""""\'' + "|tojson" * 22 + " %}x{% endautoescape %}",
        "{{ '%*d' | format(50000000, 1) }}",
        "{{ '%.*f' | format(50000000, 1.0) }}",
    ],
)
def test_analysing_a_template_computes_none_of_its_values(template: str) -> None:
    # Jinja2 folds constant expressions while it compiles: `check` once built this 50 MB
    # string (3 GB, `{{ "x" * 3000000000 }}`, took the machine's memory; red team).
    import tracemalloc

    tracemalloc.start()
    try:
        analysis = analyse.__wrapped__(template)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert analysis.problem is None
    assert peak < 5_000_000


@pytest.mark.parametrize(
    ("template", "attribute"),
    [
        ("{{ context | attr('__class__') }}", "__class__"),
        ("{{ events | map(attribute='__class__') | list }}", "__class__"),
        ("{{ events | map(attribute='value.__class__') | list }}", "__class__"),
        ("{{ events | selectattr('_secret') | list }}", "_secret"),
        ("{{ events | rejectattr('_secret', 'none') | list }}", "_secret"),
        ("{{ events | sort(attribute='__class__') }}", "__class__"),
        ("{{ events | sort(false, false, '__class__') }}", "__class__"),
        ("{{ events | sort(attribute='kind,__class__') }}", "__class__"),
        ("{{ events | map(attribute='value.__class__.__mro__') | list }}", "__class__"),
        ("{{ events | groupby('__class__') }}", "__class__"),
        ("{{ events | sum('__len__') }}", "__len__"),
        ("{{ events | unique(attribute='__class__') | list }}", "__class__"),
        ("{{ events | min(attribute='__class__') }}", "__class__"),
        ("{{ events | max(attribute='__class__') }}", "__class__"),
        ("{{ '{0.__class__}'.format(context) }}", "__class__"),
        ("{{ '{x[0].__class__.__mro__}'.format_map({'x': events}) }}", "__class__"),
        ("{{ '{0[__class__]}'.format(context) }}", "__class__"),
        ("{{ [context] | join(attribute='__class__') }}", "__class__"),
        ("{{ [context] | join(', ', '__class__') }}", "__class__"),
        ("{{ [context] | map('attr', '__class__') | list }}", "__class__"),
        ("{% set f = '{0.__class__}'.format %}{{ f(context) }}", "__class__"),
        ("{{ '{0._x}'.format_map }}", "_x"),
    ],
)
def test_attributes_named_by_a_string_are_refused_like_written_ones(
    template: str, attribute: str
) -> None:
    # The sandbox refuses these at render (a failed step); `check` must say so first.
    assert [use.path[-1] for use in analyse(template).unsafe] == [attribute]


@pytest.mark.parametrize(
    "template",
    [
        "{{ context | attr('upper') }}",
        "{{ events | map(attribute='value.name') | list }}",
        "{{ events | selectattr('kind', 'eq', '__class__') | list }}",
        "{{ '{0.name} {0[kind]} {1:>4}'.format(context, 1) }}",
        "{{ '%(__class__)s' | format({'__class__': 1}) }}",
        "{{ events | map('replace', '_', '__class__') | list }}",
    ],
)
def test_strings_that_name_no_internal_attribute_are_fine(template: str) -> None:
    assert analyse(template).unsafe == ()


@pytest.mark.parametrize(
    ("template", "line"),
    [
        ("{% if x %}" * 3000 + "{% endif %}" * 3000, 1),
        ("line\n{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", 2),
        ("\n\n{{ 'a'" + " | trim" * 20000 + " }}", 3),
        ("{{ " + " + ".join(["x"] * 3000) + " }}", 1),
        ("{% for a in x %}" * 40 + "{% endfor %}" * 40, 1),
    ],
)
def test_a_template_nested_too_deeply_is_a_problem_with_its_line(template: str, line: int) -> None:
    # Jinja2's parser and compiler recurse once per level (a RecursionError traceback
    # from `check`), and Python refuses code nested past its own limits.
    analysis = analyse(template)
    assert analysis.problem is not None
    assert "nested" in analysis.problem.message
    assert analysis.problem.line == line


def prompt_codes(tmp_path: Path, files: dict[str, str]) -> list[str]:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    compiled = compile_text(
        AGENT.replace('"ASK"', '"ok"'),
        "a.agent",
        load_prompt=PromptDirectory(tmp_path),
        generate_code=False,
    )
    return [d.code for d in compiled.diagnostics]


def test_a_child_template_s_top_level_import_is_readable_in_its_blocks(tmp_path: Path) -> None:
    """E703 refused this, though Jinja2 renders it: its meta analysis walks each block as
    if alone, not after the top level that imports `m`."""
    files = {
        "base.j2": "{% block system %}{% endblock %}{% block user %}{% endblock %}",
        "m.j2": "{% macro rules() %}Be brief.{% endmacro %}",
        "decide.j2": '{% extends "base.j2" %}{% import "m.j2" as m %}'
        '{% from "m.j2" import rules %}{% set who = agent %}'
        "{% block system %}{{ m.rules() }} {{ rules() }} {{ who }}{% endblock %}"
        "{% block user %}{{ context }}{% endblock %}",
    }
    assert prompt_codes(tmp_path, files) == []
    # Still refused: a name nothing binds, and one the top level reads before binding it.
    files["decide.j2"] = files["decide.j2"].replace("{{ who }}", "{{ whom }}")
    assert prompt_codes(tmp_path, files) == ["E703"]
    assert paths("{{ x }}{% set x = 1 %}{% block b %}{{ x }}{% endblock %}") == {("x",)}


@pytest.mark.parametrize(
    "template",
    [
        "{% macro m(x) %}{{ m(x) }}{% endmacro %}",
        "{% macro m(x) %}{% set y = m(x) | upper %}{% endmacro %}",
        "{% macro a(x) %}{{ b(x) }}{% endmacro %}{% macro b(x) %}[{{ a(x) }}]{% endmacro %}",
        "{% macro m(x) %}{% if m(x) %}{% endif %}{% endmacro %}",
        "{% macro m(x) %}{% if true %}{{ m(x) }}{% endif %}{% endmacro %}",
        "{% macro m(x) %}{% if false %}{% else %}{{ m(x) }}{% endif %}{% endmacro %}",
    ],
)
def test_a_macro_that_calls_itself_on_every_path_is_reported(template: str) -> None:
    """It never finishes: at render it ran until Python's stack (or, calling itself twice,
    the step budget) ran out, and `check` said nothing."""
    (endless,) = analyse(template).endless
    assert endless.cycle[0] == endless.cycle[-1] and endless.line == 1


@pytest.mark.parametrize(
    "template",
    [
        "{% macro t(n) %}{% for c in n.children %}{{ t(c) }}{% endfor %}{% endmacro %}",
        "{% macro t(n) %}{% if n.children %}{{ t(n.children) }}{% endif %}{% endmacro %}",
        "{% macro t(n) %}{{ t(n.next) if n.next else n }}{% endmacro %}",
        "{% macro t(n) %}{{ n.next and t(n.next) }}{% endmacro %}",
        "{% macro t(t) %}{{ t() }}{% endmacro %}",  # the argument, not the macro
        "{% macro m() %}{% call m() %}{% endcall %}{% endmacro %}".replace("m()", "n()", 1),
    ],
)
def test_a_macro_that_may_stop_calling_itself_is_fine(template: str) -> None:
    assert analyse(template).endless == ()


def test_an_endless_macro_is_e708_in_a_prompt_and_an_ask(tmp_path: Path) -> None:
    endless = "{% macro m(x) %}{{ m(x) }}{% endmacro %}{{ m(1) }}"
    assert prompt_codes(tmp_path, {"decide.j2": "{{ context }}" + endless}) == ["E708"]
    assert [c for c, _, _ in ask_diagnostics(endless, tmp_path)] == ["E708"]


@pytest.mark.parametrize(
    "template",
    [
        '{% if x %}{% set tone = "a" %}{% else %}{% set tone = "b" %}{% endif %}{{ tone }}',
        '{% if x %}{% set tone = "a" %}{% elif y %}{% set tone %}b{% endset %}'
        '{% else %}{% if z %}{% set tone = "c" %}{% else %}{% set tone = "d" %}{% endif %}'
        "{% endif %}{{ tone }}",
        "{% for i in x %}{% if i %}{% set t, u = 1, 2 %}{% else %}{% set t, u = 3, 4 %}"
        "{% endif %}{{ t }}{{ u }}{% endfor %}",
        '{% macro m(a) %}{% if a %}{% set t = 1 %}{% else %}{% set t = a ~ "" %}{% endif %}'
        "{{ t }}{% endmacro %}{{ m(x) }}",
    ],
)
def test_a_name_set_on_every_branch_of_an_if_is_known_after_it(template: str) -> None:
    # E703 refused `tone`, though Jinja2 renders it: its meta analysis counts a name an
    # `if` sets as read from the context before the `if`, in case no branch sets it.
    assert paths(template) <= {("x",), ("y",), ("z",)}
    assert jinja2.Environment().from_string(template).render(x=[1, 0], y=0, z=1)


@pytest.mark.parametrize(
    "template",
    [
        '{% if x %}{% set tone = "a" %}{% endif %}{{ tone }}',  # undefined when x is false
        '{% if x %}{% set tone = "a" %}{% elif y %}{% else %}{% set tone = "b" %}{% endif %}'
        "{{ tone }}",
        '{% if x %}{% set tone = tone ~ "a" %}{% else %}{% set tone = "b" %}{% endif %}',
        '{% if x %}{{ tone }}{% set tone = "a" %}{% else %}{% set tone = "b" %}{% endif %}',
        '{% if tone %}{% set tone = "a" %}{% else %}{% set tone = "b" %}{% endif %}',
    ],
)
def test_a_name_set_on_some_branches_or_read_before_is_still_unknown(template: str) -> None:
    assert ("tone",) in paths(template)


@pytest.mark.parametrize(
    "template",
    [
        "{% if x %}{% set g = 1 %}{% endif %}{% if g is defined %}{{ g }}{% endif %}",
        "{% if x %}{% set g = 1 %}{% endif %}{{ g | default(0) }}",
        '{% if x %}{% set g = 1 %}{% endif %}{{ g|d("none") }}',
    ],
)
def test_a_name_set_on_some_branches_and_read_through_a_guard_is_known(template: str) -> None:
    # A red team: Jinja's own idioms for a name that may not be set (`is defined`,
    # `default`) were E703, though they render whether or not a branch set it.
    assert paths(template) <= {("x",)}
    for x in (0, 1):
        jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(x=x)


SETS_G_SOMETIMES = '{% if x %}{% set g = {"a": 1} %}{% endif %}'


@pytest.mark.parametrize(
    "guarded",
    [
        '{{ g if g is defined else "" }}',
        "{% if g is defined and g.a %}yes{% endif %}",
        "{{ g is not defined or g.a }}",
        "{{ g is undefined or g.a }}",
        "{{ not (g is undefined) and g.a }}",
        "{{ (g.a if g is defined else 0) if x else (g if g is defined else 1) }}",
        "{{ g.a if g is defined and g.a else 0 }}",
        "{{ 0 if g is undefined else g.a }}",
        "{{ g.a if g is defined }}",
        "{% set y = g if g is defined else 0 %}{{ y }}",
        "{% if x == 2 %}{% elif g is defined %}{{ g.a }}{% endif %}",
        "{% if g is undefined %}{% elif g.a %}{{ g.a }}{% endif %}",
        "{% if g is undefined %}none{% else %}{{ g.a }}{% endif %}",
        "{% if not g is defined %}{% else %}{{ g.a }}{% endif %}",
        "{% if g is defined %}{{ g.a if x else g }}{% endif %}",
        "{% if ((g is defined) if x else false) %}{{ g.a }}{% endif %}",
        "{% if x and g is defined %}{{ g.a }}{% endif %}",
        "{% if g is undefined or not g.a %}{% else %}{{ g.a }}{% endif %}",
        "{% for i in [1] %}{% if g is defined %}{{ g.a }}{% endif %}{% endfor %}",
    ],
)
def test_a_read_behind_a_guard_in_any_condition_is_known(guarded: str) -> None:
    # A red team: only `{% if g is defined %}` itself was understood, not a guard in an
    # inline `if`, `and`, `or`, `not`, an `elif`, or a `{% set %}` (E703 wrongly).
    template = SETS_G_SOMETIMES + guarded
    assert paths(template) <= {("x",)}
    for x in (0, 1, 2):  # the runtime agrees: it renders whether or not `g` is set
        sandboxed().from_string(template).render(x=x)


@pytest.mark.parametrize(
    "unguarded",
    [
        "{{ g if y is defined else g }}",  # the else side reads it unguarded
        "{{ g is defined or g.a }}",  # `or` reads the right side when `g` is not set
        "{{ g.a if g is undefined else 0 }}",
        "{% if g is defined or y %}{{ g.a }}{% endif %}",
        "{% if not (g is defined) %}{{ g }}{% endif %}",
        "{% if g is defined %}{% elif y %}{{ g.a }}{% endif %}",
        "{% if g is defined %}{% else %}{{ g.a }}{% endif %}",
        "{% if g is undefined and y %}{% else %}{{ g.a }}{% endif %}",
        "{{ ((g is defined) if y else true) and g.a }}",
        "{% if g is defined %}{% endif %}{{ g.a }}",
    ],
)
def test_a_read_a_guard_does_not_cover_is_still_unknown(unguarded: str) -> None:
    template = SETS_G_SOMETIMES + unguarded
    assert ("g",) in paths(template)
    with pytest.raises(jinja2.UndefinedError, match="'g' is undefined"):  # the runtime agrees
        for x, y in itertools.product((0, 1), (0, 1)):
            sandboxed().from_string(template).render(x=x, y=y)


def test_a_guard_around_a_block_does_not_cover_the_block() -> None:
    # A block renders on its own (a prompt's message blocks, a child's blocks in its
    # parent), without the `{% if %}` written around it.
    template = (
        SETS_G_SOMETIMES + "{% if g is defined %}{% block b %}{{ g.a }}{% endblock %}{% endif %}"
    )
    assert ("g", "a") in paths(template) or ("g",) in paths(template)
    rendered = sandboxed().from_string(template)
    with pytest.raises(jinja2.UndefinedError, match="'g' is undefined"):
        "".join(rendered.blocks["b"](rendered.new_context({"x": 0})))


def test_e703_points_at_the_unguarded_read_not_the_guarded_ones() -> None:
    template = SETS_G_SOMETIMES + "\n{{ g if g is defined else 0 }}\n{{ g }}"
    assert [(u.path, u.line) for u in analyse(template).uses] == [(("x",), 1), (("g",), 3)]


def test_a_guarded_name_the_template_never_sets_is_still_e703() -> None:
    # A misspelt guard would hide its block on every run: a name set nowhere is read from
    # the context, guarded or not.
    assert ("contxt",) in paths("{% if contxt is defined %}{{ contxt }}{% endif %}")


@pytest.mark.parametrize(
    "part",
    [
        '{{ tone if tone is defined else "plain" }}',
        "{% if tone is defined and tone.a %}{{ tone.a }}{% endif %}",
        "{{ tone | default('plain') }}",
    ],
)
def test_a_loaded_file_may_read_a_name_its_loader_passes_behind_a_guard(
    tmp_path: Path, part: str
) -> None:
    # A partial that takes an optional name from the file that includes it (`{% set %}`
    # on some paths, then `{% include %}`) was E703, though it renders either way.
    top = '{% if context %}{% set tone = {"a": 1} %}{% endif %}{% include "part.j2" %}'
    assert prompt_codes(tmp_path, {"decide.j2": top, "part.j2": part}) == []
    loader = jinja2.FileSystemLoader(tmp_path)
    for context in ("", "x"):
        sandboxed(loader).get_template("decide.j2").render(context=context)
    # Read unguarded, or by the file `check` starts from, it is still E703.
    assert prompt_codes(tmp_path, {"part.j2": "{{ tone.a }}"}) == ["E703"]
    assert set(prompt_codes(tmp_path, {"decide.j2": "{{ context }}" + part})) == {"E703"}


def test_e703_says_when_the_template_sets_the_name_on_some_paths_only(tmp_path: Path) -> None:
    text = '{% if context %}{% set tone = "a" %}{% endif %}{{ tone }}'
    (tmp_path / "decide.j2").write_text(text)
    compiled = compile_text(
        AGENT.replace('"ASK"', '"ok"'),
        "a.agent",
        load_prompt=PromptDirectory(tmp_path),
        generate_code=False,
    )
    (found,) = compiled.diagnostics
    assert found.code == "E703"
    assert found.help is not None and "not on every path to line 1" in found.help
