"""Tools that route on their results (issue 12, item 1): the checks see tool rules as
they see llm rules. Each guarantee is shown holding on a correct program and failing on a
small, deliberate change to it."""

from __future__ import annotations

from tests.test_checks_programs import REPO, change, codes, diagnose

SUPPORTBOT = (REPO / "examples" / "supportbot.agent").read_text(encoding="utf-8")


def test_the_example_routes_on_its_tools_result_cleanly() -> None:
    assert diagnose(SUPPORTBOT) == []


def test_approval_dominance_sees_tool_edges() -> None:
    # A tool rule straight into the sensitive tool bypasses its approval.
    bypass = change(
        SUPPORTBOT,
        'on Customer if tier == "enterprise" -> draft_enterprise',
        'on Customer if tier == "enterprise" -> send_enterprise_reply',
    )
    typed = change(
        bypass, "tool send_enterprise_reply(Reply)", "tool send_enterprise_reply(Customer)"
    )
    assert "E501" in codes(typed)


def test_approval_dominance_is_exact_over_a_tool_results_literal_union() -> None:
    program = """
agent a { input Q  start lookup }
type Q { id: string }
type Customer { tier: "free" | "pro" | "enterprise" }
type Done { ok: bool }
tool lookup(Q) -> Customer = "crm:lookup" {
  on Customer if tier == "enterprise" -> approve
  on Customer -> charge
}
approval approve(Customer) {
  ask "Charge {{ tier }}?"
  on approved -> charge
  on rejected -> done
}
tool charge(Customer) -> Done = "crm:charge" {
  requires approval if tier == "enterprise"
  next done
}
final done
"""
    assert diagnose(program) == []
    # "pro" is now let through without an approval it requires.
    loose = change(program, 'requires approval if tier == "enterprise"',
                   'requires approval if tier != "free"')  # fmt: skip
    assert codes(loose) == ["E501"]


def test_type_flow_follows_each_rules_type() -> None:
    # UnknownCustomer now reaches a step that takes a Customer.
    anything = change(SUPPORTBOT, "on UnknownCustomer -> escalate", "on UnknownCustomer -> draft")
    assert diagnose(anything) == []  # an llm step takes whatever arrives
    typed = change(SUPPORTBOT, "on UnknownCustomer -> escalate", "on UnknownCustomer -> send_reply")
    assert codes(typed) == ["E401"]


def test_a_union_passed_on_by_next_carries_every_member() -> None:
    program = """
agent a { input Q  start find }
type Q { id: string }
type Found { id: string }
type Missing { id: string }
tool find(Q) -> Found | Missing = "crm:find" { next done }
final done(Found)
"""
    assert codes(program) == ["E401"]  # a Missing can arrive at done
    assert diagnose(change(program, "final done(Found)", "final done")) == []


def test_every_member_of_the_union_must_be_routed() -> None:
    assert codes(change(SUPPORTBOT, "on UnknownCustomer -> escalate", "")) == ["E201"]


def test_a_type_whose_rules_all_have_guards_needs_a_last_rule() -> None:
    # (`draft` is then unreachable too: W301, and its prompt's only user is gone)
    assert "E202" in codes(change(SUPPORTBOT, "on Customer -> draft", ""))


def test_a_rule_for_a_type_the_tool_never_returns() -> None:
    unknown = change(SUPPORTBOT, "on UnknownCustomer -> escalate",
                     "on UnknownCustomer -> escalate  on Reply -> escalate")  # fmt: skip
    assert codes(unknown) == ["E203"]


def test_guards_on_tool_rules_are_typed_against_the_rules_type() -> None:
    assert codes(change(SUPPORTBOT, 'if tier == "enterprise"', 'if tier == "gold"')) == ["E206"]
    assert codes(change(SUPPORTBOT, 'if tier == "enterprise"', 'if plan == "x"')) == ["E204"]


def test_a_rule_after_the_catch_all_never_fires_and_its_target_is_unreachable() -> None:
    dead = change(
        SUPPORTBOT,
        "on Customer -> draft",
        'on Customer -> draft\n  on Customer if tier == "pro" -> draft_enterprise',
    )
    assert codes(dead) == ["W209"]
    only_dead = change(
        SUPPORTBOT,
        'on Customer if tier == "enterprise" -> draft_enterprise',
        'on Customer if tier == "enterprise" and tier == "free" -> draft_enterprise',
    )
    # The enterprise path is now unreachable: W209 at the rule, W301 at the states.
    assert set(codes(only_dead)) == {"W209", "W301"}


def test_next_and_rules_together_are_refused() -> None:
    both = change(SUPPORTBOT, "on error -> escalate\n}\n\nllm draft",
                  "next draft\n  on error -> escalate\n}\n\nllm draft")  # fmt: skip
    assert codes(both) == ["E210"]


def test_a_tool_without_next_or_rules_is_missing_its_successor() -> None:
    program = """
agent a { start find }
type Found { id: string }
tool find -> Found = "crm:find" { on error -> done }
final done
"""
    assert codes(program) == ["E114"]
