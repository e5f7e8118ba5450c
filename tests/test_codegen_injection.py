"""No user text reaches a generated module except as an escaped literal, a checked identifier
or an escaped comment (issue 9 §2, header injection).

The attack: the module's first lines used to hold the raw `.agent` file name, so a file named
`coding=utf-7 bot.agent` made them a Python encoding declaration (and a description then
decoded to code), and a newline in a file name injected lines. Every place user text enters a
module goes through `pynames.escaped`; these tests check the result, not the function: a
module generated from hostile file names, descriptions, prompts, questions and source comments
has exactly the syntax tree of the same agent written with harmless text (string constants
aside), no encoding declaration, and every hostile string back unchanged as data.
"""

from __future__ import annotations

import ast
import io
import json
import tokenize
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twelvefold.compiler import PromptFile, compile_text
from twelvefold.compiler.pynames import comment, docstring, py_str
from twelvefold.runtime.loading import import_file

PIECES = [
    "coding=utf-7",
    "# -*- coding: latin-1 -*-",
    "vim: set fileencoding=utf-16 :",
    "+AAo-import os+AAo-",
    "\n",
    "\r",
    "\r\n",
    "\x0c",
    "\x0b",
    "\x00",
    "\x1c",
    "\x85",
    "\u2028",
    '"""',
    "'''",
    '"',
    "'",
    "\\",
    "\\N{BULLET}",
    "\\x41",
    "{{ x }}",
    "\nimport os\nos.system('echo pwned')\n",
]
TEXT = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), min_size=1, max_size=6
).map("".join)
"""Hostile text: the pieces above mixed with arbitrary characters (lone surrogates too)."""
CLEAN = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
"""Text a UTF-8 .agent file can hold in a string (a lone surrogate cannot be encoded in one;
a NUL is refused, E005)."""
SOURCE_TEXT = (
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(CLEAN, max_size=8)), min_size=1, max_size=6)
    .map("".join)
    .filter(lambda text: text and "\x00" not in text)
)

AGENT = """# {c1}
agent a {agent} {{
  start s
  max_steps 3
}}
type Out {type} {{ v: string {field} }}
llm s -> Out {{ # {c2}
  prompt {prompt}
  on Out -> ask_it  # {c3}
}}
human ask_it(Out) {{
  ask {ask}
  next f
}}
final f(Answer)
"""


def _agent(texts: dict[str, str]) -> str:
    # An `ask` is a template (checked as one; its sandbox is tested elsewhere): no braces here.
    texts = {**texts, "ask": texts["ask"].replace("{", "(").replace("}", ")")}
    strings = {k: json.dumps(v) for k, v in texts.items() if not k.startswith("c")}
    # A comment ends at the first line break ("\n", "\r"); the parser keeps every other
    # character in it (a form feed, U+2028: diagnostics.LINE_BREAK).
    comments = {
        k: v.replace("\n", " ").replace("\r", " ") for k, v in texts.items() if k.startswith("c")
    }
    return AGENT.format(**strings, **comments)


def _module(texts: dict[str, str], file_name: str) -> str:
    prompt = PromptFile(texts["prompt"], Path("p.j2"), "{{ context }}")
    result = compile_text(_agent(texts), file_name, load_prompt=lambda name: prompt)
    assert result.ok, [str(d) for d in result.diagnostics]
    ((_, module),) = result.files.items()
    return module


def _shape(module: str) -> str:
    """The module's syntax tree with every string constant blanked."""
    tree = ast.parse(module)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = ""
    return ast.dump(tree)


HARMLESS = {k: "x" for k in ("agent", "type", "field", "prompt", "ask", "c1", "c2", "c3")}
HARMLESS_SHAPE = _shape(_module(HARMLESS, "a.agent"))
HEADER = _module(HARMLESS, "a.agent").splitlines()[:2]


def _assert_only_data(module: str) -> None:
    encoded = module.encode("utf-8")
    assert tokenize.detect_encoding(io.BytesIO(encoded).readline)[0] == "utf-8"
    assert module.splitlines()[:2] == HEADER, "the first two lines hold no user text"
    assert _shape(module) == HARMLESS_SHAPE
    # Comments are comments: each one a single token on one line.
    for token in tokenize.generate_tokens(io.StringIO(module).readline):
        if token.type == tokenize.COMMENT:
            assert token.start[0] == token.end[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries({k: SOURCE_TEXT for k in HARMLESS if k != "prompt"}),
    TEXT.filter(lambda name: "/" not in name and "\x00" not in name),
)
def test_hostile_text_anywhere_only_ever_becomes_data(texts: dict[str, str], name: str) -> None:
    module = _module({**texts, "prompt": "p.j2"}, name + ".agent")
    _assert_only_data(module)


@pytest.mark.parametrize(
    "file_name",
    [
        "coding=utf-7 bot.agent",
        "# -*- coding: utf-7 -*-.agent",
        "bot\nimport os\nos.system('echo pwned')\n.agent",
        "bot\r.agent",
        "bot\x0c\x0c.agent",
        'bot""".agent',
        "bot\\N{BULLET}\\.agent",
        "bot\udcff.agent",  # an undecodable byte in a file name, as Path gives it
    ],
)
def test_a_hostile_file_name_is_data(file_name: str, tmp_path: Path) -> None:
    texts = {**HARMLESS, "agent": "+AAo-import os+AAo-os.system(+ACI-echo pwned+ACI-)+AAo-"}
    module = _module(texts, file_name)
    _assert_only_data(module)
    target = tmp_path / "hostile_module.py"
    target.write_bytes(module.encode("utf-8"))
    loaded = import_file(target, f"hostile_{abs(hash(file_name))}")
    assert loaded.AGENT.source == file_name
    assert loaded.AGENT.description == texts["agent"]


def test_hostile_descriptions_and_comments_come_back_unchanged(tmp_path: Path) -> None:
    texts = {
        "agent": 'ends with """',
        "type": 'ends with a backslash \\ and """\\',
        "field": "\\N{BULLET} is not a bullet",
        "prompt": "p\\N{BULLET}.j2",
        "ask": "\r\n\x0c",
        "c1": "coding=utf-7",
        "c2": "\r import os",
        "c3": "\x0c\x0b\u2028 import os",
    }
    module = _module(texts, "a.agent")
    _assert_only_data(module)
    target = tmp_path / "descriptions.py"
    target.write_text(module, encoding="utf-8")
    loaded = import_file(target, "hostile_descriptions")
    assert loaded.AGENT.description == texts["agent"]
    assert loaded.Out.__doc__ == texts["type"]
    assert loaded.Out.model_fields["v"].description == texts["field"]
    assert loaded.AGENT.states["s"].prompt == texts["prompt"]


@given(st.text())
def test_literals_docstrings_and_comments_hold_any_text(text: str) -> None:
    assert ast.literal_eval(py_str(text)) == text
    assert ast.literal_eval(f'"""{docstring(text)}"""') == text
    line = f"x = 1  # {comment(text)}\n"
    tokens = list(tokenize.generate_tokens(io.StringIO(line).readline))
    assert [t.type for t in tokens] == [
        tokenize.NAME,
        tokenize.OP,
        tokenize.NUMBER,
        tokenize.COMMENT,
        tokenize.NEWLINE,
        tokenize.ENDMARKER,
    ]
