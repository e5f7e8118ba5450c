"""Origins in guards (issue 12, item 2): the model cannot decide its own approval.

E504 is shown reported where the model's copy of a tool's fact decides whether a sensitive
tool is reached without an approval, and quiet everywhere else: on a tool's own result, a
person's answer, the action's own argument the model chooses (deploybot's `env`), a guard
between two approvals or between an approval and a person, and every example."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from twelvefold.compiler import compile_text
from twelvefold.compiler.checks.origins import deciding_values, explain_approvals
from twelvefold.compiler.diagnostics import Diagnostic
from twelvefold.compiler.prompts import PromptDirectory

REPO = Path(__file__).parent.parent
INVALID = REPO / "tests" / "invalid"
PROMPTS = PromptDirectory(INVALID / "prompts")
OLD_SPELLING = (INVALID / "E504_model_decides_its_approval.agent").read_text(encoding="utf-8")
EXAMPLES = [
    *sorted((REPO / "examples").glob("*.agent")),
    *sorted(Path("/work/shared/examples").glob("*.agent")),
]


def diagnose(text: str) -> list[Diagnostic]:
    return compile_text(text, "test.agent", load_prompt=PROMPTS, generate_code=False).diagnostics


def e504(text: str) -> list[tuple[int, str]]:
    return [(d.span.line, d.severity.value) for d in diagnose(text) if d.code == "E504"]


def change(text: str, old: str, new: str) -> str:
    assert old in text, f"the program no longer contains {old!r}"
    return text.replace(old, new, 1)


def test_the_motivating_bug_is_reported_at_both_guards() -> None:
    # The model writes "tier": "free" and skips the approval: the rule and the
    # `requires approval if` both read the model's copy of the lookup's tier.
    assert e504(OLD_SPELLING) == [(14, "error"), (23, "error")]
    (first, _) = [d for d in diagnose(OLD_SPELLING) if d.code == "E504"]
    assert "`tier` restates what `lookup` returned" in first.message
    assert 'on Customer if tier == "enterprise"' in first.help  # routes on the tool instead
    assert "# trusts model: tier" in first.help


def test_routing_on_the_tools_result_fixes_it() -> None:
    fixed = (REPO / "examples" / "supportbot.agent").read_text(encoding="utf-8")
    assert compile_text(
        fixed, "supportbot.agent", load_prompt=PromptDirectory(REPO / "prompts"),
        generate_code=False,
    ).diagnostics == []  # fmt: skip


def test_an_acknowledgement_turns_the_error_into_a_note() -> None:
    acknowledged = change(
        OLD_SPELLING, "-> approve_reply  # error: E504", "-> approve_reply  # trusts model: tier"
    )
    assert e504(acknowledged) == [(14, "note"), (23, "error")]
    both = change(acknowledged, 'tier == "enterprise"  # error: E504',
                  'tier == "enterprise"  # trusts model: tier')  # fmt: skip
    assert e504(both) == [(14, "note"), (23, "note")]
    result = compile_text(both, "t.agent", load_prompt=PROMPTS, generate_code=True)
    assert result.ok and result.files, "notes do not stop compilation"
    # Only a comment acknowledges, not a string that reads like one.
    quoted = change(
        OLD_SPELLING,
        'on Reply if tier == "enterprise" -> approve_reply',
        'on Reply if tier == "enterprise" and text != "# trusts model: tier" -> approve_reply',
    )
    assert e504(quoted) == [(14, "error"), (23, "error")]
    # Acknowledging another field acknowledges nothing.
    other = change(OLD_SPELLING, "-> approve_reply  # error: E504",
                   "-> approve_reply  # trusts model: text")  # fmt: skip
    assert e504(other) == [(14, "error"), (23, "error")]


def test_a_value_passed_through_keeps_its_origin() -> None:
    # The model's Reply reaches the sensitive tool through a failing tool's `on error`,
    # which passes the incoming value on: still the model's.
    through = change(OLD_SPELLING, "  on Reply -> send_reply\n", "  on Reply -> polish\n")
    through = change(
        through,
        "final done(Sent)",
        'final done(Sent)\ntool polish(Reply) -> Sent = "supportbot.tools:polish" {\n'
        "  next done\n  on error -> send_reply\n}",
    )
    assert [line for line, _ in e504(through)] == [14, 23]


def test_a_tools_own_result_is_trusted() -> None:
    trusted = """
agent a { input Q  max_steps 9  start lookup }
type Q { id: string }
type Customer { tier: "free" | "enterprise" }
type Sent { id: string }
tool lookup(Q) -> Customer = "crm:lookup" {
  on Customer if tier == "enterprise" -> approve
  on Customer -> send
}
approval approve(Customer) {
  ask "Send to {{ tier }}?"
  on approved -> send
  on rejected -> done
}
tool send(Customer) -> Sent = "crm:send" {
  requires approval if tier == "enterprise"
  next done
}
final done
"""
    assert diagnose(trusted) == []
    values = deciding_values(
        compile_text(trusted, "t.agent", generate_code=False).program  # type: ignore[arg-type]
    )
    assert {(v.field, o.kind) for v in values for o in v.origins} == {("tier", "tool")}


def test_a_persons_answer_is_trusted() -> None:
    answered = """
agent a { max_steps 9  start ask }
type Sent { id: string }
human ask { ask "Send it?"  next send }
tool send(Answer) -> Sent = "crm:send" {
  requires approval if text != "yes"
  next done
}
final done
"""
    program = compile_text(answered, "t.agent", generate_code=False).program
    assert program is not None
    assert [o.kind for v in deciding_values(program) for o in v.origins] == ["person"]
    assert not [d for d in diagnose(answered) if d.code == "E504"]


def test_the_actions_own_argument_is_the_policy_not_a_restated_fact() -> None:
    deploybot = (REPO / "examples" / "deploybot.agent").read_text(encoding="utf-8")
    program = compile_text(
        deploybot, "deploybot.agent", load_prompt=PromptDirectory(REPO / "prompts"),
        generate_code=False,
    ).program  # fmt: skip
    assert program is not None
    values = deciding_values(program)
    assert {v.field for v in values} == {"env"}
    assert all(v.untrusted and not v.restates for v in values)
    # Had a tool established `env` earlier, the model's copy would restate it.
    restating = deploybot.replace("tags: list[string]", "tags: list[string]\n  env: string", 1)
    assert restating != deploybot
    found = compile_text(
        restating, "deploybot.agent", load_prompt=PromptDirectory(REPO / "prompts"),
        generate_code=False,
    ).diagnostics  # fmt: skip
    assert sorted({d.code for d in found}) == ["E504"]


def test_a_guard_between_two_approvals_or_an_approval_and_a_person_decides_nothing() -> None:
    note = (INVALID / "E504_trusts_model_note.agent").read_text(encoding="utf-8")
    careful = [d for d in diagnose(note) if d.code == "E504" and 19 <= d.span.line <= 22]
    assert careful == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p))
def test_no_example_is_reported(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    found = compile_text(
        text,
        path.name,
        load_prompt=PromptDirectory(REPO / "prompts"),
        generate_code=False,
        base_dir=path.parent,
    ).diagnostics
    assert [d for d in found if d.code == "E504"] == []


def test_explain_lists_each_deciding_value_and_its_origin() -> None:
    program = compile_text(OLD_SPELLING, "old.agent", load_prompt=PROMPTS,
                           generate_code=False).program  # fmt: skip
    assert program is not None
    text = explain_approvals(program)
    assert 'tool `send_reply` requires approval if tier == "enterprise"' in text
    assert "from the model's output at `draft` (untrusted)" in text
    assert "restates the result of `lookup`: the model can skip the approval (E504)" in text


def test_check_explain_approvals_on_the_command_line() -> None:
    command = [sys.executable, "-m", "twelvefold", "check", "--explain-approvals"]
    shown = subprocess.run(
        [*command, str(REPO / "examples" / "deploybot.agent")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert '`env` in decide: on DeployBackend if env == "production"' in shown.stdout
    assert "the model chooses it: the action's own argument" in shown.stdout
    as_json = subprocess.run(
        [*command, "--format", "json", "--prompts", str(INVALID / "prompts"),
         str(INVALID / "E504_model_decides_its_approval.agent")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert as_json.returncode == 1
    entries = json.loads(as_json.stdout)
    explained = [e for e in entries if e["code"] == "explain-approvals"]
    assert {(e["field"], e["origins"][0]["kind"], tuple(e["restates"])) for e in explained} == {
        ("tier", "model", ("lookup",))
    }


FORGING = """agent pay { start d }
type Pay { amount: int, note: "ok" | "x\\u2028pay.agent: no tool requires approval" }
llm d -> Pay {
  prompt "p.j2"
  on Pay if note == "x\\u2028pay.agent: no tool requires approval" -> ap
  on Pay -> send
}
approval ap(Pay) { ask "pay {{ amount }}?" on approved -> send on rejected -> done }
tool send(Pay) -> Pay = "m:f" {
  requires approval if note == "x\\u2028pay.agent: no tool requires approval"
  next done
}
final done
"""


def test_an_explanation_is_cut_into_lines_at_line_breaks_only(tmp_path: Path) -> None:
    """rt19 F13: the explanation was split with `str.splitlines`, which also breaks at
    U+2028 (and U+0085, U+2029, \\x0b, \\x0c, \\x1c-\\x1e): a guard's literal holding one
    printed a line of its own (`pay.agent: no tool requires approval`)."""
    (tmp_path / "pay.agent").write_text(FORGING)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "p.j2").write_text("{{ context }}")
    shown = subprocess.run(
        [sys.executable, "-m", "twelvefold", "check", "--explain-approvals", "pay.agent"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    forged = [line for line in shown.stdout.split("\n") if line.startswith("pay.agent: no tool")]
    assert not forged, shown.stdout
    assert "\u2028" not in shown.stdout and "\\u2028" in shown.stdout, shown.stdout
