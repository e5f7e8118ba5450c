"""Arbitrary text and mutated valid programs only ever produce diagnostics.

Every stage (parse, every check) must turn any input into diagnostics and never raise:
a check meeting a program with other errors skips what it cannot judge. The mutations
delete, duplicate and swap lines and tokens of the real examples, which reaches the
checks with programs that parse but are wrong in many ways at once.
"""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from twelvefold.compiler import compile_text
from twelvefold.compiler.diagnostics import Diagnostic, render
from twelvefold.compiler.program import PromptFile

EXAMPLES = [
    p.read_text(encoding="utf-8")
    for p in sorted((Path(__file__).parent.parent / "examples").glob("*.agent"))
]
TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|->|[=!<>]=|[0-9]+|\S')


def tokens_of(text: str) -> list[str]:
    """The tokens of a program, comments left out (joined on one line they would swallow it)."""
    return [token for token in TOKEN.findall(text) if not token.startswith("#")]


WORDS = 'agent type llm tool approval human final on if -> { } ( ) [ ] | " : , . ? = # \n'
ALPHABET = st.sampled_from(
    [*WORDS.split(" "), "next", "start", "decide", "done", "DoneForNow", '"production"', "=="]
)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def prompts(name: str) -> PromptFile | None:
    """Some prompt names exist, with templates that are valid, broken or use unknown names."""
    texts = {"d": "{{ context }}", "b": "{% if %}", "u": "{{ nope.x }}"}
    key = name[:1]
    return PromptFile(name, Path(name), texts[key]) if key in texts else None


def compile_quietly(text: str) -> list[Diagnostic]:
    result = compile_text(text, "fuzz.agent", load_prompt=prompts, generate_code=False)
    for diagnostic in result.diagnostics:
        assert diagnostic.code[0] in "EW" and diagnostic.code[1:].isdigit()
        assert diagnostic.message
        render(diagnostic, text)  # rendering any diagnostic against its source works too
    return result.diagnostics


@FUZZ
@given(st.text(max_size=300))
@example("agent a { }")  # no states at all, so not even a default start
@example("agent a { start x } type T { f: T } final x(T)")
@example('agent a { start d input Answer } human d(Answer) { ask "{{ by.x }}" next d }')
def test_arbitrary_text(text: str) -> None:
    compile_quietly(text)


@FUZZ
@given(st.lists(ALPHABET, max_size=80).map(" ".join))
def test_arbitrary_token_soup(text: str) -> None:
    compile_quietly(text)


@st.composite
def mutated_lines(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(EXAMPLES)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "swap"]))
        if action == "delete":
            del lines[i]
        elif action == "duplicate":
            lines.insert(j, lines[i])
        else:
            lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


@st.composite
def mutated_tokens(draw: st.DrawFn) -> str:
    tokens = tokens_of(draw(st.sampled_from(EXAMPLES)))
    vocabulary = sorted(set(tokens))
    for _ in range(draw(st.integers(1, 6))):
        i, j = draw(st.integers(0, len(tokens) - 1)), draw(st.integers(0, len(tokens) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "swap", "replace"]))
        if action == "delete":
            del tokens[i]
        elif action == "duplicate":
            tokens.insert(j, tokens[i])
        elif action == "swap":
            tokens[i], tokens[j] = tokens[j], tokens[i]
        else:
            tokens[i] = draw(st.sampled_from(vocabulary))
    return " ".join(tokens)


@FUZZ
@given(mutated_lines())
def test_mutated_lines_of_the_examples(text: str) -> None:
    compile_quietly(text)


@FUZZ
@given(mutated_tokens())
def test_mutated_tokens_of_the_examples(text: str) -> None:
    compile_quietly(text)


def test_token_mutations_reach_the_checks() -> None:
    """The mutations are not all syntax errors: many programs get as far as the checks."""
    [deploybot] = [e for e in EXAMPLES if "agent deploybot" in e]
    text = " ".join(tokens_of(deploybot))
    found = compile_quietly(text.replace("-> deploy", "-> deplyo", 1))
    assert "E104" in {d.code for d in found}
