"""The parser: every construct of LANGUAGE.md becomes the right node, with its position."""

from __future__ import annotations

from pathlib import Path

import pytest

from twelvefold.compiler import nodes as n
from twelvefold.compiler import parse

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def parse_ok(text: str) -> n.SourceFile:
    source, diagnostics = parse(text, "t.agent")
    assert diagnostics == [], diagnostics
    return source


def test_examples_parse() -> None:
    for path in EXAMPLES.glob("*.agent"):
        source = parse_ok(path.read_text())
        assert source.agent is not None


def test_agent_settings() -> None:
    source = parse_ok(
        'agent bot "does things" { input Ticket start decide max_steps 24 -> escalate '
        "max_errors 3 -> escalate context { format yaml keep last 30 drop resolved errors "
        'budget 12000 tokens render list_tags "bot/tags.j2" } }'
    )
    agent = source.agent
    assert agent is not None
    assert agent.description == "does things"
    assert agent.input == n.Name("Ticket") and agent.start == n.Name("decide")
    assert agent.max_steps == n.Ceiling(n.Number(24), n.Name("escalate"))
    assert agent.max_errors == n.Ceiling(n.Number(3), n.Name("escalate"))
    assert agent.context == n.ContextDecl(
        format=n.Name("yaml"),
        keep_last=n.Number(30),
        drop_resolved_errors=True,
        budget_tokens=n.Number(12000),
        renders=(n.RenderTemplate(n.Name("list_tags"), n.Text("bot/tags.j2")),),
    )


def test_max_steps_without_target() -> None:
    agent = parse_ok("agent a { max_steps 5 }").agent
    assert agent is not None and agent.max_steps == n.Ceiling(n.Number(5), None)


def test_every_field_type() -> None:
    source = parse_ok(
        'type T "d" { a: string "the a", b: int? c: float, d: bool e: list[string] '
        'f: map[string, list[U?]] g: "x" | "y"? h: U, type: string model: int input: bool }'
        " type U {}"
    )
    t, u = source.types
    assert u == n.TypeDecl(n.Name("U"), None, ())
    fields = {f.name.text: f for f in t.fields}
    assert fields["a"] == n.FieldDecl(n.Name("a"), n.NamedType("string"), "the a")
    assert fields["b"].type == n.OptionalType(n.NamedType("int"))
    assert fields["e"].type == n.ListType(n.NamedType("string"))
    assert fields["f"].type == n.MapType(
        n.NamedType("string"), n.ListType(n.OptionalType(n.NamedType("U")))
    )
    # The `?` applies to the whole field type: an optional enum.
    assert fields["g"].type == n.OptionalType(n.LiteralUnion(("x", "y")))
    assert list(fields)[-3:] == ["type", "model", "input"]  # keywords are fine as field names


def test_llm_step_with_rules_and_guards() -> None:
    (step,) = parse_ok(
        'llm decide -> A | B { prompt "p.j2" model "m" retries 2 temperature 0.5 '
        'on A if env == "production" and not (n > -1 or tag in ["a", 2, true, null]) -> x '
        "on A -> y on B if c.d not in [] -> z on error -> w }"
    ).steps
    assert isinstance(step, n.LlmStep)
    assert [o.text for o in step.outputs] == ["A", "B"]
    assert step.prompt == n.Text("p.j2") and step.model == n.Text("m")
    assert step.retries == n.Number(2) and step.temperature == n.Number(0.5)
    assert step.on_error == n.Goto(n.Name("w"))
    first, second, third = step.rules
    assert first.guard == n.And(
        (
            n.Compare("==", n.Path(("env",)), n.Literal("production")),
            n.Not(
                n.Or(
                    (
                        n.Compare(">", n.Path(("n",)), n.Literal(-1)),
                        n.Member(
                            n.Path(("tag",)),
                            (n.Literal("a"), n.Literal(2), n.Literal(True), n.Literal(None)),
                            negated=False,
                        ),
                    )
                )
            ),
        )
    )
    assert second.guard is None and second.target == n.Name("y")
    assert third.guard == n.Member(n.Path(("c", "d")), (), negated=True)


def test_tool_approval_human_final() -> None:
    source = parse_ok(
        'tool deploy(D) -> R = "pkg.mod:fn" { requires approval if env == "prod" next a '
        "on error -> b retry 3 backoff 500ms timeout 2m } "
        'tool fetch -> R = "m:f" '
        'approval ok(D) { ask "Deploy {{ tag }}?" approvers "a", "b" timeout 1d '
        "on approved -> deploy on rejected -> a } "
        'human ask_user { ask "?" next a timeout 1h on error -> b } '
        "final done(R) final stop"
    )
    deploy, fetch, ok, ask, done, stop = source.steps
    assert isinstance(deploy, n.ToolStep)
    assert deploy.input == n.Name("D") and deploy.function == n.Text("pkg.mod:fn")
    assert deploy.retry == n.Retry(n.Number(3), n.Duration(0.5, "500ms"))
    assert deploy.timeout == n.Duration(120, "2m")
    assert deploy.requires_approval is not None and deploy.requires_approval.guard is not None
    assert isinstance(fetch, n.ToolStep) and fetch.input is None and fetch.next is None
    assert isinstance(ok, n.ApprovalStep)
    assert ok.approvers == (n.Text("a"), n.Text("b")) and ok.timeout == n.Duration(86400, "1d")
    assert ok.on_approved == n.Goto(n.Name("deploy")) and ok.on_rejected == n.Goto(n.Name("a"))
    assert isinstance(ask, n.HumanStep) and ask.input is None and ask.timeout is not None
    assert done == n.FinalStep(n.Name("done"), n.Name("R")) and stop == n.FinalStep(
        n.Name("stop"), None
    )


def test_whitespace_commas_and_comments_do_not_matter() -> None:
    one_line = parse_ok('type T { a: int, b: string } tool t -> T = "m:f" { next x on error -> x }')
    spread = parse_ok(
        "# a comment\ntype T {\n  a: int   # trailing comment\n  b: string\n}\n"
        'tool t -> T = "m:f" {\n  next x\n  on error -> x\n}\n'
    )
    assert one_line.types == spread.types and one_line.steps == spread.steps


def test_string_escapes() -> None:
    (t,) = parse_ok(r'type T "a \"quoted\" \\ \n \t \u00e9 word" {}').types
    assert t.description == 'a "quoted" \\ \n \t é word'


def test_positions_are_kept() -> None:
    source = parse_ok('agent a { start s }\n\nllm s -> A {\n  prompt "p"\n  on A -> done\n}\n')
    (step,) = source.steps
    assert isinstance(step, n.LlmStep)
    assert (step.span.line, step.span.column) == (3, 1)
    rule = step.rules[0]
    assert (rule.span.line, rule.span.column) == (5, 3)
    assert (rule.target.span.line, rule.target.span.column, rule.target.span.end_column) == (
        5,
        11,
        15,
    )


@pytest.mark.parametrize(
    ("text", "code", "line"),
    [
        ("agent a {\n  start\n}", "E001", 3),
        ('tool t -> R = "m:f" {\n  timeout 5\n}', "E001", 2),
        ("llm d -> A {\n  on A => b\n}", "E001", 2),
        ('type T {\n  a: "open\n}', "E002", 2),
        ("agent a {\n  start s\n", "E003", 2),
        ('type T "bad \\q escape" {}', "E004", 1),
        ("agent a { start s\n start t }", "E006", 2),
    ],
)
def test_syntax_errors_are_diagnostics_with_a_line(text: str, code: str, line: int) -> None:
    _, diagnostics = parse(text, "t.agent")
    assert [(d.code, d.span.line) for d in diagnostics] == [(code, line)]
    assert all(d.help for d in diagnostics)


def test_a_syntax_error_names_the_open_block_in_words() -> None:
    _, (diagnostic,) = parse(
        'agent a { start s }\ntool deploy -> R = "m:f" {\n  next\n}', "t.agent"
    )
    assert "tool deploy" in diagnostic.message and "line 2" in diagnostic.message
    assert "NAME" not in diagnostic.message + diagnostic.label + diagnostic.help
    assert "a name" in diagnostic.label


def test_suggestions_rank_close_names_and_catch_swapped_letters() -> None:
    from twelvefold.compiler.diagnostics import closest, edit_distance

    assert edit_distance("dnoe", "done") == 1
    assert edit_distance("kitten", "sitting") == 3
    assert closest("dnoe", ["done", "decide", "deploy"]) == ["done"]
    assert closest("zzz", ["done"]) == []
