"""The fields a template reads exist on the types of the values it is given: an `ask`'s
through loops and literal indexes (E403), a prompt's `input`, `last` and a judge's
`output` (E709). Each case was a typo `check` passed and the run failed on
(PromptError, AskNotShown)."""

from __future__ import annotations

from pathlib import Path

import pytest

from twelvefold.compiler import compile_text
from twelvefold.compiler.diagnostics import Diagnostic
from twelvefold.compiler.prompts import PromptDirectory
from twelvefold.compiler.template_vars import analyse

ORDER = """agent b { start h input Order }
type Order { items: list[Item], by: map[string, Item], note: Note?, who: string }
type Item { name: string, tags: list[string] }
type Note { text: string }
human h(Order) {
  ask "ASK"
  next done
}
final done
"""


def ask_found(ask: str) -> list[Diagnostic]:
    text = ORDER.replace('"ASK"', f'"{ask}"')
    return list(compile_text(text, "b.agent", generate_code=False).diagnostics)


def test_a_loop_variable_over_a_list_reads_the_item_type() -> None:
    [found] = ask_found("{% for i in items %}{{ i.nam }}{% endfor %}")
    assert (found.code, found.message) == (
        "E403",
        "`Item` has no field `nam` (`i` is an element of `items`)",
    )
    assert found.help == "did you mean `name`?"
    line = ORDER.replace('"ASK"', '"{% for i in items %}{{ i.nam }}{% endfor %}"').splitlines()[5]
    assert (found.span.line, found.span.column) == (6, line.index("i.nam") + 1)
    assert found.span.end_column - found.span.column == len("i.nam")


def test_a_literal_index_reads_the_item_type() -> None:
    [found] = ask_found('{{ items[0].nam }} {{ items[-1][\\"nme\\"] }}')[:1]
    assert (found.code, found.label) == ("E403", "`items[0].nam` does not exist")
    assert [d.message for d in ask_found('{{ items[-1][\\"nme\\"] }}')] == [
        "`Item` has no field `nme`"
    ]


def test_the_fuzzer_case_reports_both_reads() -> None:
    found = ask_found("{% for i in items %}{{ i.nam }}{% endfor %} {{ items[0].nam }}")
    assert [(d.code, d.label) for d in found] == [
        ("E403", "`i.nam` does not exist"),
        ("E403", "`items[0].nam` does not exist"),
    ]


def test_a_loop_over_a_map_gives_its_keys_and_items_its_values() -> None:
    [key] = ask_found("{% for k in by %}{{ k.name }}{% endfor %}")
    assert key.message == "`k` is a string and has no field `name` (`k` is an element of `by`)"
    assert "by.items()" in key.help
    [value] = ask_found("{% for k, v in by.items() %}{{ v.nme }}{% endfor %}")
    assert value.message == "`Item` has no field `nme` (`v` is a value of `by`)"
    [value] = ask_found("{% for v in by.values() %}{{ v.nme }}{% endfor %}")
    assert value.message == "`Item` has no field `nme` (`v` is a value of `by`)"


def test_nested_loops_follow_each_level() -> None:
    [found] = ask_found("{% for i in items %}{% for t in i.tag %}{{ t }}{% endfor %}{% endfor %}")
    assert found.message == "`Item` has no field `tag` (`i` is an element of `items`)"


def test_a_misspelt_list_is_reported_once_not_at_each_read_of_its_loop_variable() -> None:
    found = ask_found("{% for i in itemz %}{{ i.name }}{{ i.nam }}{% endfor %}")
    assert [d.message for d in found] == ["`Order` has no field `itemz`"]


@pytest.mark.parametrize(
    "ask",
    [
        # a loop variable shadowing a field: inside, the item; outside, the field
        "{% for items in items %}{{ items.name }}{% endfor %}{{ items[0].tags[0] }}",
        "{% for i in items %}{{ i.name }}{{ loop.index }}{% for t in i.tags %}{{ t }}"
        "{% endfor %}{% endfor %}",
        # `{% set %}`-bound names are the template's own values: not followed
        "{% set i = items[0] %}{{ i.anything }}{% set who = note %}{{ who.whatever }}",
        "{% for i in items %}{% set i = 3 %}{{ i.whatever }}{% endfor %}",
        # an optional record along the path: its fields are checked, a null reads as none
        "{{ note.text }}{% if note %}{{ note.text }}{% endif %}",
        # a map: its keys are data, its values items
        "{{ by.alice.name }}{% for k, v in by.items() %}{{ k }} {{ v.name }}{% endfor %}",
        "{% for k in by %}{{ k }}{{ by[k].name }}{% endfor %}",
        # methods are no fields
        "{{ who.upper() }}{% for k in by.keys() %}{{ k.lower() }}{% endfor %}",
        # a path past a filter or a variable index is not followed
        "{{ (items | first).nam }}{% for i in items | reverse %}{{ i.nam }}{% endfor %}",
        "{% for n in range(2) %}{{ items[n].name }}{% endfor %}",
        # a macro's argument is its own
        "{% macro m(i) %}{{ i.nam }}{% endmacro %}{{ m(items[0]) }}",
    ],
)
def test_valid_reads_through_loops_and_indexes_are_not_reported(ask: str) -> None:
    assert ask_found(ask) == []


AGENT = """agent a { start d input In }
type In { who: string, lines: list[Item], note: Note?, items: list[Item] }
type Item { name: string }
type Note { text: string }
type T { x: string, tone: string }
type U { x: string }
llm d -> T | U {
  prompt "d.j2"
  retries 1
  judge "judge.j2"
  on T -> e
  on U -> e
}
llm e -> T { prompt "e.j2" on T -> done }
final done
"""

VALID = {
    "d.j2": "{{ context }}{{ input.who }}{{ last.note.text }}"
    "{% for i in last.lines %}{{ i.name }}{% endfor %}{{ input.lines[0].name }}",
    "judge.j2": "{{ output.x }}{{ last.who }}",
    "e.j2": "{{ last.x }}",
}


def prompt_found(tmp_path: Path, **files: str) -> list[Diagnostic]:
    for name, text in {**VALID, **files}.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    compiled = compile_text(
        AGENT, "a.agent", load_prompt=PromptDirectory(tmp_path), generate_code=False
    )
    return [d for d in compiled.diagnostics if d.is_error]


def test_valid_prompts_are_not_reported(tmp_path: Path) -> None:
    assert prompt_found(tmp_path) == []


def test_the_input_a_prompt_reads_has_the_field(tmp_path: Path) -> None:
    [found] = prompt_found(tmp_path, **{"d.j2": "{{ context }}\n  {{ input.whom }}"})
    assert found.code == "E709"
    assert found.message == (
        'prompt "d.j2" line 2, column 6 reads `input.whom`, but `In` has no field `whom` '
        "(`input` is the thread's input)"
    )
    assert found.help == "did you mean `who`?"
    assert (found.span.line, found.span.column) == (8, 10)  # the prompt's name


def test_last_is_the_value_that_arrives_at_the_step(tmp_path: Path) -> None:
    [found] = prompt_found(tmp_path, **{"d.j2": "{{ last.note.txt }}"})
    assert found.message.endswith("but `Note` has no field `txt`")
    [found] = prompt_found(tmp_path, **{"d.j2": "{% for i in last.lines %}{{ i.nam }}{% endfor %}"})
    assert found.message == (
        'prompt "d.j2" line 1, column 29 reads `i.nam`, but `Item` has no field `nam` '
        "(`i` is an element of `last.lines`)"
    )


def test_last_must_have_the_field_on_every_type_that_can_arrive(tmp_path: Path) -> None:
    [found] = prompt_found(tmp_path, **{"e.j2": "{{ last.tone }}"})
    assert found.message == (
        'prompt "e.j2" line 1, column 4 reads `last.tone`, but `U` has no field `tone` '
        "(`last` is the value `e` is entered with: a `T` or `U`)"
    )
    assert "{% if last.tone is defined %}" in found.help
    guarded = "{% if last.tone is defined %}{{ last.tone }}{% endif %}{{ last.tone | default('') }}"
    assert prompt_found(tmp_path, **{"e.j2": guarded}) == []


def test_a_judge_reads_the_output_it_judges(tmp_path: Path) -> None:
    [found] = prompt_found(tmp_path, **{"judge.j2": "{{ output.y }}"})
    assert found.message.startswith('judge prompt "judge.j2" line 1, column 4 reads `output.y`')
    assert "(`output` is the output of `d` the judge reads: a `T` or `U`)" in found.message
    assert found.help == "did you mean `x`?"


def test_a_template_a_prompt_includes_is_checked_with_its_values(tmp_path: Path) -> None:
    (tmp_path / "part.j2").write_text("{{ last.who }}\n{{ input.whom }}", encoding="utf-8")
    [found] = prompt_found(tmp_path, **{"d.j2": '{% include "part.j2" %}'})
    assert found.message.startswith(
        '"part.j2" (included by prompt "d.j2") line 2, column 4 reads `input.whom`'
    )
    assert "`In` has no field `whom`" in found.message


@pytest.mark.parametrize(
    "template",
    [
        "{% set input = last %}{{ input.anything }}",
        "{% for last in input.lines %}{{ last.name }}{% endfor %}",
        "{{ last.items() }}{{ input.who.upper() }}{{ last | tojson }}",
        # `last.items` is the dict's method in a prompt, whatever the fields: not followed
        "{% for i in last.items %}{{ i.nam }}{% endfor %}{{ last.items.nam }}",
        "{% for e in events %}{{ e.value.anything }}{% endfor %}{{ step.x if false }}",
        "{% macro m(input) %}{{ input.other }}{% endmacro %}{{ m(last) }}",
        "{% block user %}{% for i in input.lines %}{{ i.name }}{% endfor %}{% endblock %}",
    ],
)
def test_reads_not_of_the_given_values_are_not_reported(tmp_path: Path, template: str) -> None:
    assert prompt_found(tmp_path, **{"d.j2": template}) == []


def test_a_path_through_a_loop_and_an_index_is_read_as_elements() -> None:
    from twelvefold.compiler.types import EACH, INDEX, VALUE

    reads = analyse(
        "{% for i in items %}{{ i.a }}{% endfor %}{{ items[0].b }}"
        "{% for k, v in by.items() %}{{ k }}{{ v.c }}{% endfor %}"
    ).reads
    assert [r.path for r in reads] == [
        ("items",),
        ("items", EACH, "a"),
        ("items", INDEX, "b"),
        ("by",),
        ("by", EACH),
        ("by", VALUE, "c"),
    ]
    assert [r.written for r in reads][1:3] == [("i", ".a"), ("items", "[0]", ".b")]


def test_a_loop_variable_in_a_block_is_not_the_loops() -> None:
    # a block renders on its own: `i` there is read from the context
    reads = analyse("{% for i in items %}{% block b %}{{ i.x }}{% endblock %}{% endfor %}").reads
    assert [r.path for r in reads] == [("items",), ("i", "x")]


def test_a_prompt_of_an_agent_without_an_input_type_reads_a_string(tmp_path: Path) -> None:
    (tmp_path / "d.j2").write_text("{{ context }}{{ input.who }}", encoding="utf-8")
    text = (
        "agent a { start d }\n"
        "type T { x: string }\n"
        'llm d -> T { prompt "d.j2" on T -> done }\n'
        "final done\n"
    )
    compiled = compile_text(
        text, "a.agent", load_prompt=PromptDirectory(tmp_path), generate_code=False
    )
    [found] = [d for d in compiled.diagnostics if d.is_error]
    assert "`input` is a string and has no field `who`" in found.message
    assert "input TYPE" in found.help


def test_a_loop_filter_and_a_dotted_index_are_checked(tmp_path: Path) -> None:
    found = prompt_found(
        tmp_path,
        **{"d.j2": "{% for i in last.lines if i.nam %}{% endfor %}\n{{ input.lines.0.nam }}"},
    )
    assert [d.message.split(" reads ")[0] for d in found] == [
        'prompt "d.j2" line 1, column 27',
        'prompt "d.j2" line 2, column 4',
    ]
