"""Parsing checks before dispatch (`validate`, `judge`) and secret fields (`secret`)."""

from __future__ import annotations

from twelvefold.compiler import nodes as n
from twelvefold.compiler.parser import parse

STEP = """
llm decide -> Refund {
  prompt "decide.j2"
  validate "checks:refund_is_sane"
  judge "judge.j2"
  validate "checks.policy:within_policy"
  retries 2
  on Refund -> done
}
"""


def test_validators_keep_their_order_and_the_judge_is_one_setting() -> None:
    source, diagnostics = parse(STEP)
    assert diagnostics == []
    (step,) = source.steps
    assert isinstance(step, n.LlmStep)
    assert [v.function.value for v in step.validators] == [
        "checks:refund_is_sane",
        "checks.policy:within_policy",
    ]
    assert step.judge is not None and step.judge.prompt.value == "judge.j2"
    assert step.validators[0].span.line == 4


def test_a_second_judge_is_a_setting_given_twice() -> None:
    _, diagnostics = parse('llm d -> A { prompt "p" judge "a.j2" judge "b.j2" on A -> x }')
    assert [d.code for d in diagnostics] == ["E006"]


def test_a_setting_given_twice_is_named_as_it_is_written() -> None:
    _, diagnostics = parse("agent a { start s max_cost 1 max_cost 2 }")
    assert [(d.code, d.message) for d in diagnostics] == [
        ("E006", "`max_cost` is set twice in agent `a`")
    ]
    _, diagnostics = parse('llm d -> A { prompt "p" on error -> x on error -> y on A -> x }')
    assert [d.message for d in diagnostics] == ["`on error` is set twice in llm `d`"]


def test_secret_marks_a_field_and_a_field_may_be_called_secret() -> None:
    source, diagnostics = parse(
        'type A { key: string secret "the key", pin: int? secret, secret: bool, '
        "secret_too: string secret }"
    )
    assert diagnostics == []
    fields = {f.name.text: (f.secret, f.description) for f in source.types[0].fields}
    assert fields == {
        "key": (True, "the key"),
        "pin": (True, None),
        "secret": (False, None),
        "secret_too": (True, None),
    }


def test_layout_does_not_matter_to_equality() -> None:
    one, _ = parse('type A { k: string secret } llm d -> A { prompt "p" validate "m:f" on A -> x }')
    two, _ = parse(
        "type A {\n  k: string\n    secret\n}\n"
        'llm d -> A {\n prompt "p"\n validate\n "m:f"\n on A -> x\n}'
    )
    assert one.types == two.types and one.steps == two.steps
