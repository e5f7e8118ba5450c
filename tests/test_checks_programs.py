"""The checks on whole programs: clean programs stay clean, and each guarantee bites.

The examples must check with no diagnostic at all. The approval, type-flow, loop and
reachability guarantees are each shown holding on a correct program and failing on a
small, deliberate change to it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from twelvefold.compiler import compile_text
from twelvefold.compiler.diagnostics import Diagnostic
from twelvefold.compiler.prompts import PromptDirectory

REPO = Path(__file__).parent.parent
EXAMPLES = sorted((REPO / "examples").glob("*.agent"))
SHARED_EXAMPLES = sorted(Path("/work/shared/examples").glob("*.agent"))
PROMPTS = PromptDirectory(REPO / "prompts")
DEPLOYBOT = (REPO / "examples" / "deploybot.agent").read_text(encoding="utf-8")


def diagnose(text: str, prompts: PromptDirectory = PROMPTS) -> list[Diagnostic]:
    # Files an example names (`import`, sub-agents) are beside it, in examples/.
    return compile_text(
        text, "test.agent", load_prompt=prompts, generate_code=False, base_dir=REPO / "examples"
    ).diagnostics


def codes(text: str) -> list[str]:
    return sorted(d.code for d in diagnose(text))


def change(text: str, old: str, new: str) -> str:
    assert old in text, f"the example no longer contains {old!r}"
    return text.replace(old, new, 1)


@pytest.mark.parametrize("path", [*EXAMPLES, *SHARED_EXAMPLES], ids=lambda p: str(p))
def test_examples_check_clean(path: Path) -> None:
    assert diagnose(path.read_text(encoding="utf-8")) == []


# ---- approval dominance ------------------------------------------------------------


def test_deploybot_routes_production_through_its_approval() -> None:
    assert codes(DEPLOYBOT) == []


def test_without_the_production_rule_the_deploy_rule_bypasses_approval() -> None:
    text = change(DEPLOYBOT, '  on DeployBackend if env == "production" -> approve_deploy\n', "")
    found = [d for d in diagnose(text) if d.code == "E501"]
    assert len(found) == 1
    assert found[0].span.line == DEPLOYBOT.splitlines().index("  on DeployBackend -> deploy")
    assert found[0].notes[0].message == "approval required here"
    assert "approval" in found[0].help


def test_routing_production_straight_to_deploy_bypasses_approval() -> None:
    text = change(
        DEPLOYBOT,
        'on DeployBackend if env == "production" -> approve_deploy',
        'on DeployBackend if env == "production" -> deploy',
    )
    assert "E501" in codes(text)


def test_an_equivalent_guard_is_decided_exactly() -> None:
    text = change(DEPLOYBOT, 'if env == "production" -> approve', 'if env != "staging" -> approve')
    assert codes(text) == []


def test_a_guard_on_another_field_leaves_production_possible() -> None:
    text = change(DEPLOYBOT, 'if env == "production" -> approve', 'if tag == "v1" -> approve')
    assert "E501" in codes(text)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("on rejected -> decide", "on rejected -> deploy"),
        ("  on error -> decide             #", "  on error -> deploy             #"),
    ],
)
def test_rejections_and_errors_never_count_as_approval(old: str, new: str) -> None:
    assert "E501" in codes(change(DEPLOYBOT, old, new))


def test_an_unconditional_requirement_needs_every_edge_approved() -> None:
    text = change(DEPLOYBOT, 'requires approval if env == "production"', "requires approval")
    assert [d.code for d in diagnose(text)] == ["E501"]


# ---- type flow -------------------------------------------------------------------


def test_errors_pass_the_incoming_value_through() -> None:
    """A fallback after `on error` receives what the failing tool received."""
    text = change(
        DEPLOYBOT,
        "  on error -> decide             #",
        "  on error -> deploy_fallback    #",
    ) + (
        '\ntool deploy_fallback(DeployBackend) -> DeployResult = "deploybot.tools:deploy_backend"'
        " { next decide }\n"
    )
    assert [c for c in codes(text) if c.startswith("E4")] == []
    wrong = text.replace("deploy_fallback(DeployBackend)", "deploy_fallback(GitTags)")
    assert [c for c in codes(wrong) if c.startswith("E4")] == ["E401"]


def test_a_human_passes_an_answer_on() -> None:
    asking = 'human ask_user(RequestMoreInformation) {\n  ask "{{ question }}"\n'
    text = change(DEPLOYBOT, asking + "  next decide", asking + "  next done")
    found = [d for d in diagnose(text) if d.code == "E401"]
    assert len(found) == 1 and "`Answer`" in found[0].message


def test_the_start_state_receives_the_agent_input() -> None:
    text = change(DEPLOYBOT, "start decide", "start deploy")
    assert "E401" in codes(text)


# ---- loops, reachability, size -----------------------------------------------------


def test_a_loop_through_the_model_is_fine_but_needs_a_budget() -> None:
    assert "E602" in codes(change(DEPLOYBOT, "  max_steps 24 -> escalate", ""))


def test_an_error_loop_needs_max_errors() -> None:
    text = change(DEPLOYBOT, "  max_errors 3 -> escalate", "")
    assert [c for c in codes(text) if c.startswith("E6")] == ["E603"]


def test_escalation_targets_count_as_reachable() -> None:
    """`escalate` is only reached by the ceilings; dropping them leaves it unused."""
    text = change(DEPLOYBOT, "  max_errors 3 -> escalate", "  max_errors 3 -> decide")
    text = change(text, "  max_steps 24 -> escalate", "  max_steps 24")
    assert "W902" in codes(text)


def test_many_mistakes_in_one_file_do_not_crash_any_check() -> None:
    text = """
agent a { input Missing start nowhere max_steps 0 -> gone context { format toml render x "y.j2" } }
type T { f: T2, f: map[int, Q], e: "a" | "b" }
type string { x: int }
llm l -> T | Nope | string { on T if f.g == 1 and e == "z" and q -> t on Nope -> x on Zed -> l }
tool t(Q) -> R = "bad" { next l requires approval if zzz }
tool t2 -> T = "m:f" { next t2 on error -> t2 }
approval ap(T) { ask "{{ nope.deep }} {% if %}" }
human h(Answer) { ask "{{ text }} {{ by.x }}" }
final f1(W)
"""
    found = codes(text)
    assert found and all(c[0] in "EW" for c in found)
    assert {"E104", "E105", "E109", "E111", "E112", "E115", "E204", "E206"} <= set(found)


def test_wrong_input_help_never_suggests_a_tool_without_its_input() -> None:
    # A tool declared without `(IN)` is called with no argument, so dropping the input type
    # is no fix for a tool (issue 9 §7); for a `final` step it is.
    source = """
agent a { max_steps 20  start decide }
type Query { text: string }
type Other { n: int }
type Result { rows: list[string] }
llm decide -> Query | Other {
  prompt "deploybot/decide.j2"
  on Query -> search
  on Other -> search
}
tool search(Query) -> Result = "tools.db:search" { next done }
final done(Query)
"""
    found = [d for d in diagnose(source) if d.code == "E401"]
    assert {d.help for d in found} == {
        "send only `Query` values to `search`, and route `Other` to a step that takes it",
        "send only `Query` values to `done`, or drop its input type to accept anything: "
        "`final done`",
    }, [d.help for d in found]
