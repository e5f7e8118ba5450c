"""`guard_text` prints a guard that parses back to the same expression, for any guard."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from twelvefold.compiler import nodes as n
from twelvefold.compiler.guard_text import guard_text, literal_text
from twelvefold.compiler.parser import parse

NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True).filter(
    lambda name: name not in {"and", "or", "not", "in", "true", "false", "null", "if", "on"}
)
LITERALS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    # Floats a guard can spell within the language's limits (32 digits, docs/language.md).
    st.floats(allow_nan=False, allow_infinity=False, width=64).filter(
        lambda f: f == 0 or 1e-6 <= abs(f) < 1e15
    ),
    # Strings hold no NUL and no lone surrogate (E005).
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12),
).map(lambda value: n.Literal(value))
OPERANDS = st.one_of(
    st.lists(NAMES, min_size=1, max_size=3).map(lambda p: n.Path(tuple(p))), LITERALS
)
COMPARISONS = st.one_of(
    st.builds(n.Compare, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), OPERANDS, OPERANDS),
    st.builds(n.Member, OPERANDS, st.lists(LITERALS, max_size=3).map(tuple), st.booleans()),
    st.builds(n.Truthy, OPERANDS),
)


def _combine(children: st.SearchStrategy[n.Expr]) -> st.SearchStrategy[n.Expr]:
    # The parser flattens `a and b and c`, so a nested And (Or) of the same kind is not
    # a distinct expression: generate only the shapes the parser produces.
    pairs = st.lists(children, min_size=2, max_size=3)
    return st.one_of(
        children.map(n.Not),
        pairs.filter(lambda xs: not any(isinstance(x, n.And) for x in xs)).map(
            lambda xs: n.And(tuple(xs))
        ),
        pairs.filter(lambda xs: not any(isinstance(x, n.Or) for x in xs)).map(
            lambda xs: n.Or(tuple(xs))
        ),
    )


EXPRESSIONS = st.recursive(COMPARISONS, _combine, max_leaves=8)


def parse_guard(text: str) -> n.Expr:
    source = f"agent a {{ start s }}\ntype T {{}}\nllm s -> T {{ on T if {text} -> s }}\n"
    parsed, diagnostics = parse(source, "guard.agent")
    assert not [d for d in diagnostics if d.is_error], (text, diagnostics)
    step = parsed.steps[0]
    assert isinstance(step, n.LlmStep) and step.rules[0].guard is not None
    return step.rules[0].guard


@settings(max_examples=300, deadline=None)
@given(EXPRESSIONS)
def test_printed_guards_parse_back_to_the_same_expression(expr: n.Expr) -> None:
    assert parse_guard(guard_text(expr)) == expr


def test_precedence_is_kept_with_the_fewest_parentheses() -> None:
    text = 'not (a == 1 or b) and c in ["x", "y"] or d.e not in [] and f != null'
    assert guard_text(parse_guard(text)) == text


def test_numbers_never_use_exponents() -> None:
    assert literal_text(1e-05) == "0.00001"
    assert literal_text(1e20) == "100000000000000000000.0"
    assert literal_text(-2.5) == "-2.5"
    assert literal_text('say "hi"\n') == '"say \\"hi\\"\\n"'
