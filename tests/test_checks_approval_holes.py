"""Issue 8 items 8 and 9, issue 9 §5: approvals without holes, exits that never fire.

Each example of the issues is a program here: a null that skips an approval (E502), an
approval that shows nothing of the value it approves (E503), and a guard that can never
hold on a literal union (W209, and W301 for the state only it leads to). Each is shown
failing on the program as the issue wrote it and passing on the fix the help line gives.
"""

from __future__ import annotations

from pathlib import Path

from twelvefold.compiler import compile_text
from twelvefold.compiler import types as t
from twelvefold.compiler.diagnostics import Diagnostic
from twelvefold.compiler.guards import null_skips
from twelvefold.compiler.prompts import PromptDirectory

from .test_checks_guards import TABLE, guard

PROMPTS = PromptDirectory(Path(__file__).parent / "invalid" / "prompts")

REFUND = """
agent refunds { max_steps 20  start decide }
type Customer { name: string, tier: "free" | "pro" }
type Refund {
  order: string
  amount: float?
  size: "small" | "large"?
  urgent: bool
  customer: Customer?
}
type Refunded { id: string }
type Done { message: string }
llm decide -> Refund | Done {
  prompt "ok.j2"
  on Refund -> check
  on Done -> done
}
approval check(Refund) {
  ask "Refund {{ amount }} on {{ order }}?"
  on approved -> refund
  on rejected -> decide
}
tool refund(Refund) -> Refunded = "tools.refund:run" {
  requires approval if GUARD
  next decide
}
final done(Done)
"""


def diagnose(text: str, prompts: PromptDirectory = PROMPTS) -> list[Diagnostic]:
    return compile_text(text, "test.agent", load_prompt=prompts, generate_code=False).diagnostics


def e502(guard_text: str) -> list[str]:
    found = diagnose(REFUND.replace("GUARD", guard_text))
    assert all(d.code == "E502" for d in found), found
    return [d.message.split("`")[1] for d in found]


def test_the_refund_program_is_clean_without_a_guard() -> None:
    assert diagnose(REFUND.replace(" if GUARD", "")) == []


def test_a_null_size_no_longer_skips_size_not_small() -> None:
    """Item 8 as filed: `!=` is now true for a null size, so the approval is asked."""
    assert e502('size != "small"') == []
    assert e502('size not in ["small"]') == []


def test_a_null_that_skips_the_approval_is_reported_with_the_fix() -> None:
    (found,) = diagnose(REFUND.replace("GUARD", "amount > 1000"))
    assert found.code == "E502"
    assert "a missing `amount` skips the approval of `refund`" in found.message
    assert "`requires approval if amount == null or amount > 1000`" in found.help
    assert e502('size == "large"') == ["size"]
    assert e502('size in ["large"]') == ["size"]
    assert e502('customer.tier == "pro"') == ["customer"]
    assert e502('amount > 1000 or size == "large"') == ["amount", "size"]


def test_the_help_lines_fix_is_clean() -> None:
    assert e502("amount == null or amount > 1000") == []
    assert e502('customer == null or customer.tier == "pro"') == []
    assert e502('size in ["large", null]') == []


def test_a_guard_that_decides_null_on_purpose_is_not_reported() -> None:
    assert e502("amount != null and amount > 1000") == []
    assert e502('customer.tier != null and customer.tier == "pro"') == []


def test_a_null_that_makes_no_difference_is_not_reported() -> None:
    # Whatever the size, `urgent` alone decides when it is false.
    assert e502('urgent and size != "small"') == []
    assert e502("urgent") == []
    assert e502('not (size == "small")') == []


def test_null_skips_on_the_shared_types() -> None:
    root = t.Record("T")
    assert null_skips(guard('stage == "a"'), root, TABLE) == ["stage"]
    assert null_skips(guard('stage != "a"'), root, TABLE) == []
    assert null_skips(guard('inner.level == "high"'), root, TABLE) == ["inner"]
    assert null_skips(guard('inner.tag == "x"'), root, TABLE) == ["inner", "inner.tag"]
    assert null_skips(guard('env == "production"'), root, TABLE) == []
    assert null_skips(guard('env == "production"'), None, TABLE) == []


# ---- item 9: an approval that shows nothing ------------------------------------------

SHOWS_NOTHING = """
agent refunds { max_steps 20  start decide }
type Refund { order: string, amount: float }
type Refunded { id: string }
type Done { message: string }
llm decide -> Refund | Done {
  prompt "ok.j2"
  on Refund -> ok
  on Done -> done
}
approval ok {
  ask "Continue?"
  on approved -> refund
  on rejected -> decide
}
tool refund(Refund) -> Refunded = "tools.refund:run" {
  requires approval
  next decide
}
final done(Done)
"""


def test_an_approval_without_the_tools_input_is_an_error() -> None:
    (found,) = diagnose(SHOWS_NOTHING)
    assert found.code == "E503"
    assert "never sees the `Refund`" in found.message
    assert "approval ok(Refund)" in found.help
    assert found.notes[0].message == "approval required here"


def test_the_approval_carrying_the_input_is_clean() -> None:
    fixed = SHOWS_NOTHING.replace("approval ok {", "approval ok(Refund) {").replace(
        '"Continue?"', '"Refund {{ amount }} on {{ order }}?"'
    )
    assert diagnose(fixed) == []


# ---- issue 9 §5: exits that never fire -------------------------------------------------

NEVER = """
agent a { max_steps 5  start decide }
type Done { message: string, size: "small" | "large", ok: bool }
llm decide -> Done {
  prompt "ok.j2"
  on Done if GUARD -> other
  on Done -> done
}
final other(Done)
final done(Done)
"""


def test_a_guard_that_can_never_hold_is_an_exit_that_never_fires() -> None:
    found = diagnose(NEVER.replace("GUARD", 'size == "small" and size == "large"'))
    assert sorted(d.code for d in found) == ["W209", "W301"]
    (w301,) = [d for d in found if d.code == "W301"]
    assert "`other`" in w301.message


def test_a_guard_that_can_hold_fires() -> None:
    assert diagnose(NEVER.replace("GUARD", 'size == "small" or ok')) == []
    # Exhaustive on the union: now the required catch-all is the rule that never fires.
    exhaustive = diagnose(NEVER.replace("GUARD", 'size == "small" or size == "large"'))
    assert [(d.code, d.message) for d in exhaustive] == [
        ("W301", "no thread can reach `done` from `decide`")
    ]
    assert diagnose(NEVER.replace("GUARD", 'size == "small" and ok')) == []


def test_a_guard_that_earlier_guards_already_cover_never_fires() -> None:
    text = NEVER.replace(
        "  on Done if GUARD -> other\n",
        '  on Done if size != "large" -> done\n  on Done if size == "small" -> other\n',
    )
    assert sorted(d.code for d in diagnose(text)) == ["W209", "W301"]
