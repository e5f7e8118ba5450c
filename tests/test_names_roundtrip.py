"""A `.agent` name is spelled as declared wherever a person or a model sees it (issue 9 §3):
the schema, the context, prompts, `ask`, `--json`, cassettes and notices, through the real
runtime and the scripted OpenAI-compatible server. Python spellings (`from_`, `State_`)
stay inside the generated module."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_helpers import RecordingNotifier
from tests.support.e2e import ModelTurns
from twelvefold.compiler import compile_file, compile_text
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.cassette import entry_json
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.model import DISCRIMINATOR_NAMES, ModelReply, ModelRequest, response_shape
from twelvefold.runtime.types import CallModel, Usage

FIXTURES = Path(__file__).parent / "names_fixtures"
MAIL = FIXTURES / "mail.agent"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_from_round_trips_through_schema_context_ask_json_and_notice(
    rt: Runtime, model: ModelTurns, notifier: RecordingNotifier
) -> None:
    seen: list[str] = []

    def answer(context: str) -> dict[str, Any]:
        seen.append(context)
        return {"type": "State", "from": "ana", "note": None}

    model.then(answer)
    view = rt.launch(MAIL, {"from": "bob", "from_": "carol", "json": "x"})

    assert (view.status, view.step) == ("waiting", "review")
    assert view.question == "Mail from ana?"  # `{{ from }}` in the ask
    (context,) = seen
    assert "from: bob" in context and "from_: carol" in context and "from__" not in context
    assert "Sender: bob / carol / x" in context  # a prompt reads `input.from`

    request = rt_request(model)
    schema = json.dumps(request["tools"])
    assert '"from"' in schema and "from__" not in schema
    assert '"State"' in schema and "State_" not in schema  # the tag the model answers with
    assert "_twelvefold" not in schema

    (notice,) = notifier.notices
    assert notice.as_json()["value"] == {"from": "ana", "note": None}
    codec = Codec(rt.agent(MAIL).module.AGENT)
    encoded = [codec.encode_event(e) for e in rt.events(view.id)]
    assert encoded[0]["input"]["value"] == {"from": "bob", "from_": "carol", "json": "x"}
    output = next(e for e in encoded if e.get("kind") == "model_output" or "output" in e)
    assert output["output"] == {"type": "State", "value": {"from": "ana", "note": None}}
    decoded = [codec.decode_event(e) for e in encoded]
    assert decoded == rt.events(view.id)
    done = rt.resume(view.id, approve=True, request=view.request)
    assert done.to_json()["output"] == {"from": "ana", "note": None}  # `run --json`


def rt_request(model: ModelTurns) -> dict[str, Any]:
    (request,) = model.server.requests
    return request


def test_a_cassette_records_declared_names(tmp_path: Path) -> None:
    from tests.support.generated import import_generated

    module = import_generated(MAIL, tmp_path, FIXTURES / "prompts")
    state = module.AGENT.types["State"].model_validate({"from": "ana"})
    action = CallModel(
        step="decide", value=None, outputs=(module.AGENT.types["State"],), prompt=None
    )
    request = ModelRequest(module.AGENT, action, [], "t", 1)
    line = json.loads(entry_json(request, ModelReply(state, Usage(1.0)), None))
    assert (line["type"], line["output"]) == ("State", {"from": "ana", "note": None})


def test_a_union_that_uses_every_discriminator_candidate_gets_a_free_tag(tmp_path: Path) -> None:
    fields = ", ".join(f"{name}: string" for name in DISCRIMINATOR_NAMES)
    source = f"""
agent u {{ start s }}
type A {{ {fields} }}
type B {{ output_type_: int }}
llm s -> A | B {{ prompt "p.j2" on A -> a on B -> b }}
final a(A)
final b(B)
"""
    module = _compiled(source, tmp_path)
    a, b = module.AGENT.types["A"], module.AGENT.types["B"]
    shape = response_shape("s", (a, b))
    assert shape.tag == "output_type__"
    parsed = shape.model.model_validate({"choice": {"output_type__": "B", "output_type_": 3}})
    assert shape.unwrap(parsed) == b.model_validate({"output_type_": 3})


def test_a_recursive_type_has_a_schema_without_module_paths(tmp_path: Path) -> None:
    source = """
agent r {{ start s }}
# {comment}
type Tree {{ label: string, children: list[Tree] }}
type Leaf {{ label: string }}
llm s -> Tree | Leaf {{ prompt "p.j2" on Tree -> t on Leaf -> l }}
final t(Tree)
final l(Leaf)
"""
    schemas = []
    for comment in ("one comment", "another comment"):
        module = _loaded(source.format(comment=comment), tmp_path / comment.replace(" ", "_"))
        types = module.AGENT.types
        shape = response_shape("s", (types["Tree"], types["Leaf"]))
        schemas.append(json.dumps(shape.model.model_json_schema(), sort_keys=True))
        single = response_shape("s", (types["Tree"],))
        schemas.append(json.dumps(single.model.model_json_schema(), sort_keys=True))
    assert schemas[0] == schemas[2] and schemas[1] == schemas[3]
    for text in schemas:
        assert "_twelvefold" not in text and "__" not in text, text


def test_an_agent_named_like_a_module_does_not_shadow_it(tmp_path: Path) -> None:
    for name in ("json", "pydantic", "typing", "os", "twelvefold"):
        agent = tmp_path / f"{name}.agent"
        agent.write_text(
            f"agent {name} {{ start s }}\ntype O {{ v: int }}\n"
            'llm s -> O { prompt "p.j2" on O -> f }\nfinal f(O)\n'
        )
        (tmp_path / "p.j2").write_text("{{ context }}")
        result = compile_file(agent, prompts_dir=tmp_path)
        assert result.ok, result.diagnostics
        assert list(result.files) == [f"{name}_agent.py"]


def test_states_may_be_called_like_contextual_keywords(tmp_path: Path) -> None:
    words = ["drop", "last", "keep", "retry", "timeout", "error", "input", "next", "start"]
    words += ["approved", "model", "prompt", "render", "format", "on", "type", "list"]
    steps = "\n".join(
        f'tool {w}(O) -> O = "t:f" {{ next {words[i + 1] if i + 1 < len(words) else "fin"} }}'
        for i, w in enumerate(words)
    )
    source = f"""
agent k {{ input O start {words[0]} max_steps 30 }}
type O {{ drop: int, next: int, if: int }}
{steps}
final fin(O)
"""
    result = compile_text(source, "k.agent", generate_code=True)
    assert result.ok, [d.message for d in result.diagnostics]


def _compiled(source: str, folder: Path) -> Any:
    return _loaded(source, folder)


def _loaded(source: str, folder: Path) -> Any:
    from tests.support.generated import import_generated

    (folder / "out").mkdir(parents=True, exist_ok=True)
    (folder / "prompts").mkdir(exist_ok=True)
    (folder / "prompts" / "p.j2").write_text("{{ context }}")
    agent = folder / "a.agent"
    agent.write_text(source)
    return import_generated(agent, folder / "out", folder / "prompts")


def test_json_input_refuses_unknown_keys_at_every_level(rt: Runtime) -> None:
    from twelvefold.runtime.api import InputError

    with pytest.raises(InputError, match="surprise: Extra inputs are not permitted"):
        rt.launch(MAIL, {"from": "bob", "surprise": 1})
    with pytest.raises(InputError, match="surprise: Extra inputs are not permitted"):
        rt.launch(MAIL, '{"from": "bob", "surprise": 1}')


def test_the_reserved_words_are_derived_from_the_grammar_and_documented() -> None:
    from lark.lexer import PatternStr

    from twelvefold.compiler.checks.names import reserved_words
    from twelvefold.compiler.parser import _lark
    from twelvefold.compiler.syntax_errors import KEYWORDS

    literal = {
        str(t.pattern.value)
        for t in _lark().terminals
        if isinstance(t.pattern, PatternStr) and str(t.pattern.value).isidentifier()
    }
    assert literal == KEYWORDS
    reserved = reserved_words()
    assert reserved == {"state": frozenset(), "type": frozenset({"error", "list", "map"})}
    language = (Path(__file__).parents[1] / "docs" / "language.md").read_text()
    for word in reserved["type"]:
        assert f"`{word}`" in language.split("The reserved words are few")[1][:400]
