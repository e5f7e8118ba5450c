"""Guards: typing (E204–E208), their meaning, and deciding whether they can hold.

`evaluate` is the checker's model of a guard; the generated code is the real thing
(guard_python.py). The property test in test_guard_semantics.py holds the two (and the
documented table) to the same answer on every value, so approval dominance reasons
about the guards that actually run.
"""

from __future__ import annotations

from twelvefold.compiler import nodes as n
from twelvefold.compiler import parse
from twelvefold.compiler import types as t
from twelvefold.compiler.guards import GuardScope, can_hold, evaluate, type_guard

SOURCE = """
agent a { start s }
type Inner { level: "low" | "high", tag: string? }
type T {
  env: "staging" | "production"
  stage: "a" | "b" | "c"?
  urgent: bool
  count: int
  ratio: float
  name: string
  note: string?
  inner: Inner?
  items: list[string]
}
final s(T)
"""
SOURCE_FILE, _ = parse(SOURCE)
TYPES = {d.name.text: d for d in SOURCE_FILE.types}
TABLE = t.TypeTable(TYPES)
ROOT = t.Record("T")


def guard(text: str) -> n.Expr:
    """Parse `text` as the guard of a rule."""
    program = f"""
agent a {{ start s }}
type T {{ x: int }}
llm s -> T {{ prompt "p" on T if {text} -> s on T -> s }}
"""
    source, diagnostics = parse(program)
    assert not diagnostics, diagnostics
    step = source.steps[0]
    assert isinstance(step, n.LlmStep) and step.rules[0].guard is not None
    return step.rules[0].guard


def codes(text: str) -> list[str]:
    return [d.code for d in type_guard(guard(text), GuardScope(ROOT, TABLE, "x", "`T`"))]


# ---- typing ----------------------------------------------------------------------


def test_well_typed_guards_report_nothing() -> None:
    for text in [
        'env == "production"',
        'env != "staging" and urgent',
        "not urgent or count >= 3",
        "ratio < 0.5 and count > -2",
        "note == null",
        'note != null and note == "x"',
        'inner.level == "high"',
        "inner == null",
        "inner.tag != null",
        'stage in ["a", "b"]',
        'stage not in ["c", null]',
        'name < "m"',
        "urgent == true",
        "(urgent)",
    ]:
        assert codes(text) == [], text


def test_unknown_fields_nested_ones_included() -> None:
    assert codes('enviroment == "production"') == ["E204"]
    assert codes('inner.levle == "high"') == ["E204"]
    assert codes('name.first == "x"') == ["E204"]


def test_guard_on_a_step_without_input_has_no_fields() -> None:
    scope = GuardScope(None, TABLE, "x", "tool `t`")
    assert [d.code for d in type_guard(guard("urgent"), scope)] == ["E204"]


def test_comparisons_of_different_types() -> None:
    assert codes('count == "3"') == ["E205"]
    assert codes("env == 3") == ["E205"]
    assert codes("urgent < true") == ["E205"]
    assert codes('items == "x"') == ["E205"]
    assert codes('inner == "x"') == ["E205"]


def test_literal_outside_the_union() -> None:
    assert codes('env == "prod"') == ["E206"]
    assert codes('"prod" == env') == ["E206"]
    assert codes('stage in ["a", "d"]') == ["E206"]


def test_null_only_on_optional_fields_and_only_equality() -> None:
    assert codes("name == null") == ["E207"]
    assert codes("note < null") == ["E207"]
    assert codes("count != null") == ["E207"]


def test_bare_operands_must_be_bools() -> None:
    assert codes("name") == ["E208"]
    assert codes("count and urgent") == ["E208"]
    assert codes("3") == ["E208"]


def test_every_problem_in_one_guard_is_reported() -> None:
    assert codes('nme == "x" or env == "prod" or count') == ["E204", "E206", "E208"]


# ---- deciding --------------------------------------------------------------------


def test_can_hold_is_exact_over_literal_unions_and_bools() -> None:
    production = guard('env == "production"')
    assert can_hold([production], [production], ROOT, TABLE) is False
    assert can_hold([guard('env != "staging"')], [production], ROOT, TABLE) is False
    assert can_hold([production], [guard("urgent")], ROOT, TABLE) is True
    assert can_hold([guard("urgent and not urgent")], [], ROOT, TABLE) is False
    assert can_hold([guard('stage == "c"')], [guard('stage in ["a", "b"]')], ROOT, TABLE)
    # A null stage is "not in" a list of values, so it cannot get past such a guard.
    assert not can_hold([guard("stage == null")], [guard('stage not in ["a"]')], ROOT, TABLE)
    assert can_hold([guard("stage == null")], [guard('stage in ["a"]')], ROOT, TABLE)
    assert not can_hold([guard("stage == null")], [guard("stage == null")], ROOT, TABLE)


def test_can_hold_is_conservative_elsewhere() -> None:
    big = guard("count > 3")
    assert can_hold([big], [big], ROOT, TABLE) is True  # not decided: assumed to hold
    assert can_hold([guard('name == "x"')], [], t.UNKNOWN, TABLE) is True


def test_null_is_a_value_equal_only_to_null() -> None:
    """Issue 8 item 8: `x != v` and `not (x == v)` agree for null."""
    env = {("note",): None}
    assert evaluate(guard('note == "x"'), env) is False
    assert evaluate(guard('note != "x"'), env) is True
    assert evaluate(guard('not (note == "x")'), env) is True
    assert evaluate(guard('note in ["x"]'), env) is False
    assert evaluate(guard('note not in ["x"]'), env) is True
    assert evaluate(guard('note in ["x", null]'), env) is True
    assert evaluate(guard("note == null"), env) is True
    assert evaluate(guard("note != null"), env) is False
    assert evaluate(guard('note < "m"'), env) is False
    assert evaluate(guard('not (note < "m")'), env) is True


# The generated code, this evaluator and the documented semantics are held to the same
# answer on every value by the property test in tests/test_guard_semantics.py.


def test_a_field_of_an_unknown_type_may_be_null() -> None:
    # Approval dominance over a value whose type is not known: `== null` can hold.
    assert can_hold([guard("amount == null")], [], t.UNKNOWN, TABLE)
    assert can_hold([guard("amount != null")], [], t.UNKNOWN, TABLE)
    # A known, required field is never null.
    assert not can_hold([guard("count == null")], [], ROOT, TABLE)
