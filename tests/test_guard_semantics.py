"""Issue 9 §5: the compiled guard, the checker's evaluator and the documented semantics agree.

For generated guards and generated values (null, NaN, ±inf, negative numbers, empty
strings, every literal of a union), three implementations give the same answer:

1. the generated Python: a small agent is compiled with the guard both as an llm rule
   (its `reduce` routes the output) and as `requires approval if GUARD` (its
   `needs_approval` function), imported and called;
2. the checker's evaluator, `guards.evaluate`;
3. `documented` below, written from the table in docs/language.md ("Guards and missing
   values") and from nothing else.

Values are built with `model_construct`, past validation: the generated models refuse
NaN and the infinities, but the guard must equal its source even for a value that got
in some other way.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from twelvefold.compiler import compile_text
from twelvefold.compiler import nodes as n
from twelvefold.compiler import types as t
from twelvefold.compiler.guard_text import guard_text
from twelvefold.compiler.guards import (
    MAX_RULE_TRIALS,
    GuardScope,
    can_hold,
    evaluate,
    null_skips,
    rules_that_fire,
    type_guard,
)
from twelvefold.compiler.prompts import PromptDirectory
from twelvefold.runtime.loading import import_file
from twelvefold.runtime.types import ModelOutput, State

PROMPTS = PromptDirectory(Path(__file__).parent / "invalid" / "prompts")
TYPES = """
type Inner { level: "low" | "high", tag: string? }
type T {
  env: "staging" | "production"
  stage: "a" | "b" | "c"?
  urgent: bool
  flag: bool?
  count: int
  amount: float?
  ratio: float
  name: string
  note: string?
  inner: Inner?
}
type Done { message: string }
"""
AGENT = (
    "agent props { max_steps 5  start decide }\n"
    + TYPES
    + """
llm decide -> T {
  prompt "ok.j2"
  on T if GUARD -> check
  on T -> other
}
approval check(T) {
  ask "{{ env }}?"
  on approved -> act
  on rejected -> other
}
tool act(T) -> Done = "props_tools:act" {
  requires approval if (GUARD) and NULLS
  next done
}
final other(T)
final done(Done)
"""
)
OPTIONAL = ["stage", "flag", "amount", "note", "inner", "inner.tag"]
NULLS = " and ".join(f"({p} == null or {p} != null)" for p in OPTIONAL)
"""True for every value, and it tests each optional field for null, so E502 (which a
guard like `amount > 1000` would rightly raise) leaves the generated guard alone."""

SPECIAL = [math.nan, math.inf, -math.inf]
VALUES: dict[tuple[str, ...], list[Any]] = {
    ("env",): ["staging", "production"],
    ("stage",): ["a", "b", "c", None],
    ("urgent",): [True, False],
    ("flag",): [True, False, None],
    ("count",): [-3, 0, 1000],
    ("amount",): [None, *SPECIAL, -1.5, 0.0, 1000.0],
    ("ratio",): [*SPECIAL, -0.5, 0.0],
    ("name",): ["", "x", "m"],
    ("note",): [None, "", "x"],
    ("inner", "level"): ["low", "high"],
    ("inner", "tag"): [None, "", "x"],
}
LITERALS: dict[tuple[str, ...], list[n.LiteralValue]] = {
    ("env",): ["staging", "production"],
    ("stage",): ["a", "b", "c", None],
    ("urgent",): [True, False],
    ("flag",): [True, False, None],
    ("count",): [-3, 0, 1000, -1.5],
    ("amount",): [-1.5, 0, 1000, 1000.5, None],
    ("ratio",): [-0.5, 0, 2],
    ("name",): ["", "x", "m"],
    ("note",): ["", "x", None],
    ("inner", "level"): ["low", "high"],
    ("inner", "tag"): ["", "x", None],
}
NUMBERS = [("count",), ("amount",), ("ratio",)]
STRINGS = [("name",), ("note",), ("inner", "tag")]
ORDERED = {*NUMBERS, *STRINGS}
BOOLS = [("urgent",), ("flag",)]


# ---- the documented semantics, from docs/language.md's table -----------------------------


def documented(expr: n.Expr, value: dict[str, Any]) -> bool:
    """docs/language.md: null equals only null; `!=` is `not ==`; `in` is `==` one of them;
    an ordering with null or NaN is false; a bare bool holds when it is true; a null
    record makes every path through it null."""
    match expr:
        case n.Not(operand=operand):
            return not documented(operand, value)
        case n.And(operands=operands):
            return all(documented(o, value) for o in operands)
        case n.Or(operands=operands):
            return any(documented(o, value) for o in operands)
        case n.Truthy(value=operand):
            return read(operand, value) is True
        case n.Member(value=operand, options=options, negated=negated):
            found = any(same(read(operand, value), o.value) for o in options)
            return not found if negated else found
        case n.Compare(op=op, left=left, right=right):
            a, b = read(left, value), read(right, value)
            if op == "==":
                return same(a, b)
            if op == "!=":
                return not same(a, b)
            if a is None or b is None:
                return False
            return bool({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])
    raise AssertionError(expr)


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(a == b)  # NaN equals nothing


def read(operand: n.Operand, value: dict[str, Any]) -> Any:
    if isinstance(operand, n.Literal):
        return operand.value
    current: Any = value
    for part in operand.parts:
        if current is None:
            return None
        current = current[part]
    return current


# ---- generated guards and values ---------------------------------------------------------


@st.composite
def atoms(draw: st.DrawFn) -> n.Expr:
    path = draw(st.sampled_from(sorted(VALUES)))
    field = n.Path(path)
    kind = draw(st.sampled_from(["compare", "member", "truthy", "paths", "literals"]))
    if kind == "truthy" and path in BOOLS:
        return n.Truthy(field)
    if kind == "member":
        options = draw(st.lists(st.sampled_from(LITERALS[path]), min_size=1, max_size=3))
        return n.Member(field, tuple(n.Literal(o) for o in options), draw(st.booleans()))
    if kind == "paths" and path in ORDERED:
        family = NUMBERS if path in NUMBERS else STRINGS
        other = n.Path(draw(st.sampled_from(family)))
        return n.Compare(draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="])), field, other)
    if kind == "literals":
        left, right = draw(st.sampled_from([("x", None), (None, "x"), (None, None), (3, 5)]))
        op = draw(st.sampled_from(["==", "!="] if None in (left, right) else ["==", "<", ">="]))
        return n.Compare(op, n.Literal(left), n.Literal(right))
    literal = draw(st.sampled_from(LITERALS[path]))
    ops = ["==", "!="]
    if path in ORDERED and literal is not None:
        ops += ["<", "<=", ">", ">="]
    pair = (field, n.Literal(literal))
    left, right = pair if draw(st.booleans()) else pair[::-1]
    return n.Compare(draw(st.sampled_from(ops)), left, right)


guards = st.recursive(
    atoms(),
    lambda inner: st.one_of(
        inner.map(n.Not),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: n.And(tuple(xs))),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: n.Or(tuple(xs))),
    ),
    max_leaves=5,
)


@st.composite
def values(draw: st.DrawFn) -> dict[str, Any]:
    top = {p[0]: draw(st.sampled_from(v)) for p, v in VALUES.items() if len(p) == 1}
    inner = None
    if draw(st.booleans()):
        inner = {"level": draw(st.sampled_from(VALUES[("inner", "level")]))}
        inner["tag"] = draw(st.sampled_from(VALUES[("inner", "tag")]))
    return {**top, "inner": inner}


# ---- the generated code ------------------------------------------------------------------

_TABLE_SOURCE, _ = __import__("twelvefold.compiler", fromlist=["parse"]).parse(
    "agent a { start s }\n" + TYPES + "final s(T)\n"
)
TABLE = t.TypeTable({d.name.text: d for d in _TABLE_SOURCE.types})


def well_typed(expr: n.Expr) -> bool:
    return not type_guard(expr, GuardScope(t.Record("T"), TABLE, "x", "`T`"))


_modules: dict[str, Any] = {}


def compiled(expr: n.Expr, folder: Path) -> Any:
    text = guard_text(expr)
    source = AGENT.replace("GUARD", text).replace("NULLS", NULLS)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    if digest not in _modules:
        result = compile_text(source, "props.agent", load_prompt=PROMPTS)
        assert result.ok, [d.message for d in result.diagnostics]
        ((_, code),) = result.files.items()
        path = folder / f"props_{digest}.py"
        path.write_text(code)
        _modules[digest] = import_file(path, f"_guard_props_{digest}")
    return _modules[digest]


def instance(module: Any, value: dict[str, Any]) -> Any:
    types = module.AGENT.types
    inner = value["inner"]
    fields = {**value, "inner": None if inner is None else types["Inner"].model_construct(**inner)}
    return types["T"].model_construct(**fields)


def routed(module: Any, output: Any) -> bool:
    state = State(step="decide", value="go", status="running", input="go")
    after = module.reduce(state, ModelOutput(step="decide", output=output))
    assert after.step in ("check", "other")
    return bool(after.step == "check")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("guards")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(guards, st.lists(values(), min_size=1, max_size=8))
def test_the_compiled_guard_equals_the_evaluator_equals_the_docs(
    folder: Path, expr: n.Expr, samples: list[dict[str, Any]]
) -> None:
    assume(well_typed(expr))
    module = compiled(expr, folder)
    needs_approval = module.AGENT.states["act"].requires_approval
    for value in samples:
        expected = documented(expr, value)
        env = {path: read(n.Path(path), value) for path in VALUES}
        env[("inner",)] = value["inner"]  # only compared with null
        assert evaluate(expr, env) is expected, (guard_text(expr), value)
        output = instance(module, value)
        assert routed(module, output) is expected, (guard_text(expr), value)
        assert needs_approval(output) is expected, (guard_text(expr), value)


# ---- the issue's examples, one by one ------------------------------------------------------

CASES = [
    # (guard, value changes, expected): issue 8 item 8 and issue 9 §5.
    ('stage != "a"', {"stage": None}, True),
    ('not (stage == "a")', {"stage": None}, True),
    ('stage == "a"', {"stage": None}, False),
    ('stage not in ["a", "b"]', {"stage": None}, True),
    ('stage in ["a", null]', {"stage": None}, True),
    ('inner.tag != "x"', {"inner": None}, True),
    ('inner.level == "high"', {"inner": None}, False),
    ("not (amount <= 1000)", {"amount": math.nan}, True),
    ("not (ratio <= 1000)", {"ratio": math.nan}, True),
    ("ratio > 1000", {"ratio": math.nan}, False),
    ("amount > 1000", {"amount": math.nan}, False),
    ("not (amount <= 1000)", {"amount": None}, True),
    ("not (amount <= 1000)", {"amount": math.inf}, True),
    ("amount < 0", {"amount": -math.inf}, True),
    ('null == "x"', {}, False),
    ('null != "x"', {}, True),
    ("not flag", {"flag": None}, True),
    ('name == ""', {"name": ""}, True),
]
BASE: dict[str, Any] = {
    "env": "staging",
    "stage": "a",
    "urgent": False,
    "flag": True,
    "count": 0,
    "amount": 5.0,
    "ratio": 0.0,
    "name": "x",
    "note": None,
    "inner": {"level": "low", "tag": "x"},
}


def parsed(text: str) -> n.Expr:
    from .test_checks_guards import guard

    return guard(text)


@pytest.mark.parametrize(("text", "changes", "expected"), CASES, ids=[c[0] for c in CASES])
def test_the_issues_examples(
    folder: Path, text: str, changes: dict[str, Any], expected: bool
) -> None:
    expr = parsed(text)
    value = {**BASE, **changes}
    module = compiled(expr, folder)
    output = instance(module, value)
    assert documented(expr, value) is expected
    assert routed(module, output) is expected
    assert module.AGENT.states["act"].requires_approval(output) is expected
    env = {path: read(n.Path(path), value) for path in VALUES}
    assert evaluate(expr, env) is expected


def test_the_literals_that_were_compiled_to_constants_the_wrong_way() -> None:
    """`null == "x"` compiled to `if True:` and `null != "x"` to `if False:`."""
    from twelvefold.compiler.guard_python import GuardCompiler

    compiler = GuardCompiler({}, None, "v")
    assert compiler.compile(parsed('null == "x"')) == "False"
    assert compiler.compile(parsed('null != "x"')) == "True"
    assert compiler.compile(parsed("null == null")) == "True"


def test_not_is_kept_where_flipping_it_changes_the_answer() -> None:
    from twelvefold.compiler.guard_python import GuardCompiler

    types = {d.name.text: d for d in _TABLE_SOURCE.types}
    compiler = GuardCompiler(types, "T", "v")
    assert compiler.compile(parsed("not (amount <= 1000)")) == (
        "not (v.amount is not None and v.amount <= 1000)"
    )
    assert compiler.compile(parsed('not (stage == "a")')) == 'v.stage != "a"'
    assert compiler.compile(parsed('inner.tag != "x"')) == 'v.inner is None or v.inner.tag != "x"'


def test_every_value_of_the_tables_is_tried() -> None:
    # The strategies above draw from these lists; NaN, both infinities, a negative number,
    # an empty string and null are each among them.
    flat = list(itertools.chain.from_iterable(VALUES.values()))
    assert any(isinstance(v, float) and math.isnan(v) for v in flat)
    assert math.inf in flat and -math.inf in flat and "" in flat and None in flat
    assert any(isinstance(v, int | float) and v < 0 for v in flat)


# ---- which rules can fire: one pass equals the rule-by-rule question ----------------------


@settings(max_examples=150, deadline=None)
@given(st.lists(guards, min_size=1, max_size=4))
def test_rules_that_fire_answers_as_can_hold_rule_by_rule(written: list[n.Expr]) -> None:
    assume(all(well_typed(g) for g in written))
    rules: list[n.Expr | None] = [*written, None]  # a step's rules end unguarded
    root = t.Record("T")
    expected = [
        can_hold([g] if g is not None else [], written[:i], root, TABLE)
        for i, g in enumerate(rules)
    ]
    assert rules_that_fire(rules, root, TABLE) == expected


def test_too_many_combinations_are_not_judged() -> None:
    never = parsed('env == "staging" and env == "production"')
    assert rules_that_fire([never, None], t.Record("T"), TABLE) == [False, True]
    many = [never] * (MAX_RULE_TRIALS // 2 + 1)
    assert all(rules_that_fire(many, t.Record("T"), TABLE))


# ---- E502 finds every null that skips an approval -----------------------------------------

OPTIONAL_VALUES: dict[str, list[Any]] = {
    "stage": ["a", "b", "c"],
    "flag": [True, False],
    "amount": [*SPECIAL, -1.5, 0.0, 1000.0, 1000.5],
    "note": ["", "x"],
    "inner": [{"level": lv, "tag": tag} for lv in ("low", "high") for tag in (None, "", "x")],
}


def null_tested(expr: n.Expr) -> set[tuple[str, ...]]:
    """The paths the guard compares with `null` itself (`== null`, `!= null`, `in [null]`)."""
    found: set[tuple[str, ...]] = set()
    match expr:
        case n.Not(operand=operand):
            found |= null_tested(operand)
        case n.And(operands=operands) | n.Or(operands=operands):
            for operand in operands:
                found |= null_tested(operand)
        case n.Compare(left=left, right=right):
            for a, b in ((left, right), (right, left)):
                if isinstance(a, n.Path) and isinstance(b, n.Literal) and b.value is None:
                    found.add(a.parts)
        case n.Member(value=n.Path() as path, options=options):
            if any(o.value is None for o in options):
                found.add(path.parts)
    return found


@settings(max_examples=200, deadline=None)
@given(guards, values())
def test_every_null_that_skips_the_approval_is_reported(
    expr: n.Expr, value: dict[str, Any]
) -> None:
    """A witness found by brute force (the field null: the guard is false; some value of
    it: true) is always reported, unless the guard tests that field for null itself."""
    assume(well_typed(expr))
    reported = null_skips(expr, t.Record("T"), TABLE)
    for field, choices in OPTIONAL_VALUES.items():
        if any(p[0] == field for p in null_tested(expr)):
            continue
        if documented(expr, {**value, field: None}):
            continue
        if any(documented(expr, {**value, field: choice}) for choice in choices):
            assert field in reported, (guard_text(expr), field, value)
