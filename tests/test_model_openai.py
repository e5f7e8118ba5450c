"""OpenAIModel through the real openai + instructor client against a scripted server on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from tests.support.openai_server import Reply, ScriptedOpenAI
from twelvefold.runtime import AgentSpec, CallModel, StateSpec
from twelvefold.runtime.model import (
    DEFAULT_MODEL,
    ModelError,
    ModelReply,
    ModelRequest,
    OpenAIModel,
    resolve_model_name,
    response_shape,
)
from twelvefold.runtime.openai_client import MAX_REPLY_BYTES


class Add(BaseModel):
    """Add two numbers."""

    a: float
    b: float


class Subtract(BaseModel):
    """Subtract b from a."""

    a: float
    b: float


class DeployBackend(BaseModel):
    """Deploy one tagged backend build."""

    tag: str = Field(description="an existing git tag")
    env: Literal["staging", "production"]


class ListGitTags(BaseModel):
    """List the git tags that can be deployed."""


AGENT = AgentSpec(
    name="calc",
    description=None,
    source="calc.agent",
    start="decide",
    input_type=str,
    types={"Add": Add, "Subtract": Subtract},
    states={"decide": StateSpec(kind="llm", line=1, outputs=("Add", "Subtract"))},
    edges=(),
)


def request(
    *outputs: type[BaseModel], retries: int = 0, model: str | None = None, seq: int = 1
) -> ModelRequest:
    action = CallModel(
        step="decide",
        value="x",
        outputs=outputs or (Add, Subtract),
        prompt="calc/decide.j2",
        model=model,
        retries=retries,
    )
    messages = [
        {"role": "system", "content": "You are a calculator."},
        {"role": "user", "content": "<user_input>add 1 and 2</user_input>"},
    ]
    return ModelRequest(AGENT, action, messages, thread_id="t1", seq=seq)


def complete(model: OpenAIModel, req: ModelRequest) -> ModelReply:
    return asyncio.run(model.complete(req))


def client(server: ScriptedOpenAI, mode: Literal["tools", "json"] = "tools") -> OpenAIModel:
    return OpenAIModel(
        model="test-model", base_url=server.base_url, api_key="k", mode=mode, transport_retries=0
    )


def test_a_valid_tool_call_becomes_the_declared_type(openai_server: ScriptedOpenAI) -> None:
    openai_server.reply_tool({"choice": {"type": "Subtract", "a": 5, "b": 3}}, usage=(120, 9))
    reply = complete(client(openai_server), request())
    assert type(reply.output) is Subtract
    assert reply.output == Subtract(a=5, b=3)
    assert reply.usage.input_tokens == 120
    assert reply.usage.output_tokens == 9
    assert reply.usage.latency_ms is not None and reply.usage.latency_ms >= 0

    (sent,) = openai_server.requests
    assert sent["model"] == "test-model"
    assert sent["messages"] == request().messages  # exactly the rendered messages, nothing added
    (tool,) = sent["tools"]
    assert tool["function"]["name"] == "decide"
    assert tool["function"]["description"] == "Add | Subtract"
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "decide"}}
    choice = tool["function"]["parameters"]["properties"]["choice"]
    assert choice["discriminator"]["propertyName"] == "type"
    defs = tool["function"]["parameters"]["$defs"]
    assert defs["Add"]["description"] == "Add two numbers."
    assert defs["Add"]["properties"]["type"]["const"] == "Add"


def test_a_single_output_type_is_asked_for_directly(openai_server: ScriptedOpenAI) -> None:
    openai_server.reply_tool({"tag": "v1.2.3", "env": "staging"})
    reply = complete(client(openai_server), request(DeployBackend))
    assert reply.output == DeployBackend(tag="v1.2.3", env="staging")
    function = openai_server.requests[0]["tools"][0]["function"]
    assert function["name"] == "DeployBackend"
    assert function["description"] == "Deploy one tagged backend build."
    assert function["parameters"]["properties"]["tag"]["description"] == "an existing git tag"


def test_an_empty_type_is_a_valid_choice(openai_server: ScriptedOpenAI) -> None:
    openai_server.reply_tool({"choice": {"type": "ListGitTags"}})
    reply = complete(client(openai_server), request(ListGitTags, DeployBackend))
    assert reply.output == ListGitTags()


def test_a_malformed_output_is_re_asked_with_the_validation_error(
    openai_server: ScriptedOpenAI,
) -> None:
    openai_server.reply_tool({"choice": {"type": "Add", "a": "one", "b": 2}})
    openai_server.reply_tool({"choice": {"type": "Add", "a": 1, "b": 2}})
    reply = complete(client(openai_server), request(retries=1))
    assert reply.output == Add(a=1, b=2)

    first, second = openai_server.requests
    assert len(second["messages"]) > len(first["messages"])
    fed_back = json.dumps(second["messages"][len(first["messages"]) :])
    assert "choice.Add.a" in fed_back  # the failing field, as pydantic names it
    assert "valid number" in fed_back


def test_same_fields_of_another_type_are_not_mistaken(openai_server: ScriptedOpenAI) -> None:
    # Add and Subtract have the same fields; only the tag tells them apart, and a wrong or
    # missing tag is a validation error, not a silent guess.
    openai_server.reply_tool({"choice": {"a": 1, "b": 2}})
    openai_server.reply_tool({"choice": {"type": "Add", "a": 1, "b": 2, "c": 3}})
    with pytest.raises(ModelError) as raised:
        complete(client(openai_server), request(retries=1))
    assert raised.value.error.type == "InvalidOutput"
    assert len(openai_server.requests) == 2


def test_still_invalid_after_the_retries_is_a_model_error(openai_server: ScriptedOpenAI) -> None:
    for _ in range(3):
        openai_server.reply_tool({"choice": {"type": "Multiply", "a": 1, "b": 2}})
    with pytest.raises(ModelError) as raised:
        complete(client(openai_server), request(retries=2))
    error = raised.value.error
    assert error.type == "InvalidOutput"
    assert "`decide`" in error.message and "3 attempt" in error.message
    assert "'Multiply'" in error.message  # what was wrong, in pydantic's words
    assert "\n" not in str(error)  # compact: it goes into the context window as one line
    assert len(openai_server.requests) == 3  # the first try and two re-asks, no more


def test_no_retries_means_one_attempt(openai_server: ScriptedOpenAI) -> None:
    openai_server.reply_tool("{not json")
    openai_server.reply_tool({"choice": {"type": "Add", "a": 1, "b": 2}})
    with pytest.raises(ModelError):
        complete(client(openai_server), request(retries=0))
    assert len(openai_server.requests) == 1


def test_an_unreachable_endpoint_is_a_model_error() -> None:
    with ScriptedOpenAI() as server:
        base_url = server.base_url
    model = OpenAIModel(model="m", base_url=base_url, api_key="k", transport_retries=0)
    with pytest.raises(ModelError) as raised:
        complete(model, request())
    assert raised.value.error.type == "APIConnectionError"


def test_a_server_error_is_a_model_error(openai_server: ScriptedOpenAI) -> None:
    openai_server.reply_error(400, "model `nope` does not exist")
    with pytest.raises(ModelError) as raised:
        complete(client(openai_server), request())
    assert raised.value.error.type == "BadRequestError"
    assert "does not exist" in raised.value.error.message


@pytest.mark.parametrize("shape", ["declared", "decoded"])
def test_a_reply_larger_than_the_cap_is_a_model_error_read_no_further(
    openai_server: ScriptedOpenAI, shape: str
) -> None:
    """A reply of more than `MAX_REPLY_BYTES`, declared by its Content-Length or inflated
    from a small gzip body (a decompression bomb), fails the call with `ReplyTooLarge`
    instead of being read whole, and is not asked for again (transport retries on)."""
    big = MAX_REPLY_BYTES + 1
    reply = Reply(arguments={"choice": {"type": "Add", "a": 1, "b": 2}}, padding=big)
    openai_server.responder = lambda body: (
        reply if shape == "declared" else dataclasses.replace(reply, gzip=True)
    )
    model = OpenAIModel(model="m", base_url=openai_server.base_url, api_key="k")
    with pytest.raises(ModelError) as raised:
        complete(model, request())
    assert raised.value.error.type == "ReplyTooLarge"
    assert f"{MAX_REPLY_BYTES:,} bytes" in raised.value.error.message
    # Refused by what the headers declare (before reading), or as it inflates.
    said = "declares" if shape == "declared" else "decodes to"
    assert f"reply {said} more than" in raised.value.error.message
    assert len(openai_server.requests) == 1
    # A reply under the cap, compressed or not, is read as before.
    openai_server.responder = lambda body: dataclasses.replace(reply, padding=1000, gzip=True)
    assert complete(model, request()).output == Add(a=1, b=2)


def test_json_mode_asks_for_json_content(openai_server: ScriptedOpenAI) -> None:
    openai_server.reply_json({"choice": {"type": "Add", "a": 2, "b": 40}}, usage=(50, 5))
    reply = complete(client(openai_server, mode="json"), request())
    assert reply.output == Add(a=2, b=40)
    assert reply.usage.input_tokens == 50
    (sent,) = openai_server.requests
    assert "tools" not in sent
    assert sent["response_format"] == {"type": "json_object"}
    # instructor states the schema in the system message; `twelvefold prompt` shows it.
    assert '"discriminator"' in sent["messages"][0]["content"]


def test_json_mode_re_asks_too(openai_server: ScriptedOpenAI) -> None:
    openai_server.reply_json("this is not json")
    openai_server.reply_json({"choice": {"type": "Add", "a": 2, "b": 40}})
    reply = complete(client(openai_server, mode="json"), request(retries=1))
    assert reply.output == Add(a=2, b=40)
    assert len(openai_server.requests) == 2


def test_model_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    action = request(model="from-step").action
    monkeypatch.setenv("OPENAI_MODEL", "from-env")
    assert resolve_model_name("from-flag", action) == "from-flag"
    assert resolve_model_name(None, action) == "from-step"
    assert resolve_model_name(None, request().action) == "from-env"
    monkeypatch.delenv("OPENAI_MODEL")
    assert resolve_model_name(None, request().action) == DEFAULT_MODEL


def test_environment_configures_the_endpoint(
    openai_server: ScriptedOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    openai_server.reply_tool({"choice": {"type": "Add", "a": 1, "b": 1}})
    complete(OpenAIModel(transport_retries=0), request())
    assert openai_server.requests[0]["model"] == "env-model"


def test_the_response_model_refuses_what_the_union_does_not_allow() -> None:
    shape = response_shape("decide", (Add, Subtract))
    good = shape.model.model_validate({"choice": {"type": "Add", "a": 1, "b": 2}})
    assert type(shape.unwrap(good)) is Add
    for bad in (
        {"choice": {"a": 1, "b": 2}},  # no tag
        {"choice": {"type": "Divide", "a": 1, "b": 2}},  # not in the union
        {"choice": {"type": "Add", "a": 1, "b": 2, "extra": 0}},  # unknown field
        {"choice": {"type": "Add", "a": 1}},  # missing field
        {"type": "Add", "a": 1, "b": 2},  # not wrapped
    ):
        with pytest.raises(ValueError):
            shape.model.model_validate(bad)


def test_a_field_called_type_moves_the_tag() -> None:
    class Event(BaseModel):
        type: str

    shape = response_shape("decide", (Event, Add))
    assert shape.tag == "kind"
    parsed = shape.model.model_validate({"choice": {"kind": "Event", "type": "push"}})
    assert shape.unwrap(parsed) == Event(type="push")


def test_importing_the_runtime_does_not_import_openai_or_instructor() -> None:
    code = (
        "import sys, twelvefold.runtime, twelvefold.runtime.model, twelvefold.runtime.context,"
        " twelvefold.runtime.cassette, twelvefold.runtime.notify;"
        "print(sorted(m for m in ('openai', 'instructor') if m in sys.modules))"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("mode", ["tools", "json"])
def test_preview_is_exactly_what_a_real_call_sends(
    openai_server: ScriptedOpenAI, mode: Literal["tools", "json"]
) -> None:
    model = client(openai_server, mode=mode)
    shown = asyncio.run(model.preview(request()))
    assert openai_server.requests == []  # the preview sent nothing
    if mode == "tools":
        openai_server.reply_tool({"choice": {"type": "Add", "a": 1, "b": 2}})
    else:
        openai_server.reply_json({"choice": {"type": "Add", "a": 1, "b": 2}})
    complete(model, request())
    (sent,) = openai_server.requests
    assert shown == sent


@pytest.mark.parametrize("mode", ["tools", "json"])
def test_a_reply_cut_off_at_the_token_limit_is_a_model_error(
    openai_server: ScriptedOpenAI, mode: Literal["tools", "json"]
) -> None:
    """finish_reason "length" (instructor's IncompleteOutputException) fails the call with one
    line, so the loop records a step failure and `on error` is taken; it is not re-asked."""
    cut = '{"choice": {"type": "Add", "a": 1'
    if mode == "tools":
        openai_server.reply_tool(cut, finish_reason="length")
    else:
        openai_server.reply_json(cut, finish_reason="length")
    with pytest.raises(ModelError) as raised:
        complete(client(openai_server, mode=mode), request(retries=2))
    assert raised.value.error.type == "IncompleteOutput"
    assert "cut off" in raised.value.error.message and "\n" not in raised.value.error.message
    assert len(openai_server.requests) == 1


class Undescribed(BaseModel):
    tag: str


def test_a_type_without_a_description_gets_no_invented_one(openai_server: ScriptedOpenAI) -> None:
    """Issue 9 §7: instructor wrote "Correctly extracted `X` with all the required ..."."""
    openai_server.reply_tool({"tag": "v1"})
    complete(client(openai_server), request(Undescribed))
    function = openai_server.requests[0]["tools"][0]["function"]
    assert function["description"] == ""
    assert "Correctly" not in json.dumps(openai_server.requests[0])


def test_one_tool_call_is_asked_for_and_a_second_is_never_dropped_silently(
    openai_server: ScriptedOpenAI,
) -> None:
    from tests.support.openai_server import Reply

    openai_server.script.append(Reply(arguments={"tag": "v1"}, calls=2))
    with pytest.raises(ModelError, match="2 tool calls"):
        complete(client(openai_server), request(Undescribed))
    assert openai_server.requests[0]["parallel_tool_calls"] is False


def test_the_request_is_prepared_once_per_step_shape(
    openai_server: ScriptedOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """instructor's `create` built new pydantic models (and the tool's schema) on every call,
    most of a call's CPU; the prepared request is built once and every call sends it."""
    model = client(openai_server)
    for _ in range(4):
        openai_server.reply_tool({"choice": {"type": "Add", "a": 1, "b": 2}})
    complete(model, request())  # the first call prepares

    created: list[str] = []

    def count(cls: type[BaseModel], **kwargs: object) -> None:
        created.append(cls.__name__)

    monkeypatch.setattr(BaseModel, "__pydantic_init_subclass__", classmethod(count))
    for _ in range(3):
        assert complete(model, request()).output == Add(a=1, b=2)
    assert created == []  # no model class built per call
    first, *others = openai_server.requests
    assert all(sent["tools"] == first["tools"] for sent in others)
    from twelvefold.runtime.model import prepared_request

    prepared = prepared_request("decide", (Add, Subtract), "tools")
    assert prepared is prepared_request("decide", (Add, Subtract), "tools")
    assert prepared_request("decide", (Add, Subtract), "json") is not prepared


def test_json_mode_feeds_the_validation_error_back(openai_server: ScriptedOpenAI) -> None:
    openai_server.reply_json({"choice": {"type": "Add", "a": "two", "b": 40}})
    openai_server.reply_json({"choice": {"type": "Add", "a": 2, "b": 40}})
    reply = complete(client(openai_server, mode="json"), request(retries=1))
    assert reply.output == Add(a=2, b=40)
    first, second = openai_server.requests
    assert second["messages"][: len(first["messages"])] == first["messages"]
    fed_back = json.dumps(second["messages"][len(first["messages"]) :])
    assert '\\"two\\"' in fed_back  # the reply itself, then pydantic's words on it
    assert "choice.Add.a" in fed_back and "valid number" in fed_back


def test_the_schema_paragraph_joins_the_system_message_in_json_mode(
    openai_server: ScriptedOpenAI,
) -> None:
    """The prepared request still writes instructor's paragraph into each call's own
    messages: after a system message, or as one when the prompt has none."""
    model = client(openai_server, mode="json")
    with_system = asyncio.run(model.preview(request()))
    system = with_system["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You are a calculator.")
    assert '"discriminator"' in system["content"]
    bare = request()
    bare.messages[:] = bare.messages[1:]
    without = asyncio.run(model.preview(bare))["messages"]
    assert [m["role"] for m in without] == ["system", "user"]
    assert without[0]["content"].strip() == system["content"].split("\n\n", 1)[1].strip()
    assert without[1] == bare.messages[0]


CLOSED_RUNTIME = """
import sys
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.cassette import CassetteRecorder
from twelvefold.runtime.model import OpenAIModel
from twelvefold.runtime.store import MemoryStore

fixtures = sys.argv[2]
model = OpenAIModel(model="m", base_url=sys.argv[1], api_key="k", transport_retries=0)
if len(sys.argv) > 3:
    model = CassetteRecorder(model, sys.argv[3])
with Runtime(MemoryStore(), model=model, tool_paths=[fixtures]) as rt:
    print(rt.launch(fixtures + "/counter.agent", "count").status)
"""


@pytest.mark.parametrize("recorded", [False, True])
def test_a_closed_runtime_leaves_no_connection_pool_behind(
    openai_server: ScriptedOpenAI, tmp_path: Path, recorded: bool
) -> None:
    """The pool belongs to the runtime's event loop: `Runtime.close` closes it there (through
    a cassette recorder too), so nothing reports an unclosed session when the process exits."""
    import subprocess

    openai_server.reply_tool({"choice": {"type": "Done", "n": 0}})
    fixtures = Path(__file__).parent / "runtime_fixtures"
    cassette = [str(tmp_path / "c.jsonl")] if recorded else []
    done = subprocess.run(
        [sys.executable, "-c", CLOSED_RUNTIME, openai_server.base_url, str(fixtures), *cassette],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "finished"
    assert "Unclosed" not in done.stderr and done.stderr.strip() == "", done.stderr


LOOP_AFTER_LOOP = """
import asyncio, sys
from twelvefold.runtime.model import OpenAIModel
from tests.test_model_openai import request

model = OpenAIModel(model="m", base_url=sys.argv[1], api_key="k", transport_retries=0)
for _ in range(2):
    print(asyncio.run(model.complete(request())).output)
"""


def test_each_event_loop_closes_the_pool_it_used_as_it_ends(openai_server: ScriptedOpenAI) -> None:
    """One model used from `asyncio.run` after `asyncio.run`, never closed: each loop's
    pool is closed as that loop ends, so nothing is reported unclosed at exit."""
    import subprocess

    for _ in range(2):
        openai_server.reply_tool({"choice": {"type": "Add", "a": 1, "b": 2}})
    done = subprocess.run(
        [sys.executable, "-c", LOOP_AFTER_LOOP, openai_server.base_url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["a=1.0", "b=2.0"] * 2
    assert done.stderr.strip() == "", done.stderr


# ---- on the wire: what instructor's own `create` sends --------------------------------

VALID = {"choice": {"type": "Add", "a": 1, "b": 2}}
INVALID = {"choice": {"type": "Add", "a": "one", "b": 2}}

WIRE_SCRIPTS: dict[str, tuple[Literal["tools", "json"], list[Reply]]] = {
    "tools, valid": ("tools", [Reply(arguments=VALID)]),
    "tools, re-asked": ("tools", [Reply(arguments=INVALID), Reply(arguments=VALID)]),
    "tools, broken JSON": ("tools", [Reply(arguments='{"choice": '), Reply(arguments=VALID)]),
    "tools, no tool call": ("tools", [Reply(content="I'd add them."), Reply(arguments=VALID)]),
    "tools, retried 500": ("tools", [Reply(status=500, error="busy"), Reply(arguments=VALID)]),
    "tools, retried 429": (
        "tools",
        [Reply(status=429, error="slow down", retry_after="0"), Reply(arguments=VALID)],
    ),
    "json, valid": ("json", [Reply(content=json.dumps(VALID))]),
    "json, re-asked": (
        "json",
        [Reply(content=json.dumps(INVALID)), Reply(content=json.dumps(VALID))],
    ),
    "json, not JSON": ("json", [Reply(content="sum: 3"), Reply(content=json.dumps(VALID))]),
}


async def _through_instructor(
    server: ScriptedOpenAI, mode: Literal["tools", "json"], req: ModelRequest
) -> None:
    """The request sent as the code before `PreparedRequest` sent it: instructor's `create`
    on a stock openai client over the same aiohttp transport."""
    import instructor
    from openai import AsyncOpenAI, DefaultAioHttpClient

    openai_client = AsyncOpenAI(
        base_url=server.base_url, api_key="k", max_retries=1, http_client=DefaultAioHttpClient()
    )
    patched = instructor.from_openai(
        openai_client, mode=instructor.Mode.TOOLS if mode == "tools" else instructor.Mode.JSON
    )
    arguments: dict[str, Any] = {
        "model": "test-model",
        "messages": [dict(m) for m in req.messages],
        "response_model": response_shape("decide", (Add, Subtract)).model,
        "max_retries": req.action.retries,
    }
    if mode == "tools":
        arguments["parallel_tool_calls"] = False
    try:
        await patched.chat.completions.create_with_completion(**arguments)
    finally:
        await openai_client.close()


@pytest.mark.parametrize("script", list(WIRE_SCRIPTS))
def test_the_requests_on_the_wire_are_byte_for_byte_instructors(
    openai_server: ScriptedOpenAI, script: str
) -> None:
    """Every request a call sends, first try, re-asks and the openai client's own retries:
    path, headers in order and body bytes, against instructor's `create` on a stock openai
    client (the replies it parses feed the re-asks, so parsing is covered too)."""
    mode, replies = WIRE_SCRIPTS[script]
    req = request(retries=1)
    model = OpenAIModel(
        model="test-model",
        base_url=openai_server.base_url,
        api_key="k",
        mode=mode,
        transport_retries=1,
    )
    openai_server.script.extend(replies)
    complete(model, req)
    ours = list(openai_server.wire)
    assert len(ours) == len(replies)

    openai_server.wire.clear()
    openai_server.requests.clear()  # the same tool call ids in the replies
    openai_server.script.extend(replies)
    asyncio.run(_through_instructor(openai_server, mode, req))
    theirs = openai_server.wire
    # instructor's `create` writes the body's keys in another order (openai's parameters,
    # alphabetical); the bodies are the same JSON, and our bytes are what they were.
    assert [(path, headers, json.loads(body)) for path, headers, body in ours] == [
        (path, headers, json.loads(body)) for path, headers, body in theirs
    ]


def _reply_data(**extra: Any) -> dict[str, Any]:
    from tests.support.openai_server import completion

    body = {"model": "m", "tool_choice": {"type": "function", "function": {"name": "decide"}}}
    data = completion(body, Reply(arguments=VALID), n=1)
    data["choices"][0]["message"]["refusal"] = None
    data.update(extra)
    return data


@pytest.mark.parametrize(
    "extra",
    [{}, {"system_fingerprint": "fp_1", "service_tier": "default", "x_vendor": {"k": [1]}}],
)
def test_a_reply_is_the_completion_openai_would_construct(
    extra: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply's `ChatCompletion`, validated by pydantic, equals openai's own unvalidated
    construction of it (re-asks dump it into the next request), without that walk."""
    from openai._models import construct_type
    from openai.types.chat import ChatCompletion

    from twelvefold.runtime import openai_client

    data = _reply_data(**extra)
    expected = construct_type(type_=ChatCompletion, value=data)

    def walked(**_: object) -> None:
        raise AssertionError("openai's construction walk ran for a well-typed reply")

    monkeypatch.setattr(openai_client, "construct_type", walked)
    built = openai_client.ChatCompletionReply.build(response=None, data=data)  # type: ignore[arg-type]
    assert type(built) is ChatCompletion
    assert built.model_dump() == expected.model_dump()
    assert built.model_dump(exclude_unset=True) == expected.model_dump(exclude_unset=True)
    assert built.model_dump_json() == expected.model_dump_json()
    called = built.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert type(called) is type(expected.choices[0].message.tool_calls[0])  # type: ignore[index]


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
@pytest.mark.parametrize(
    ("field", "value"),
    [("created", "1700000001"), ("finish_reason", "end_turn"), ("usage", {"prompt_tokens": 1.5})],
)
def test_a_loosely_typed_reply_is_taken_as_openai_takes_it(field: str, value: object) -> None:
    """A field of another type than declared (an OpenAI-compatible server's quirk) is kept
    as sent, unvalidated, as openai's client keeps it: never coerced, never refused."""
    from openai._models import construct_type
    from openai.types.chat import ChatCompletion

    from twelvefold.runtime.openai_client import ChatCompletionReply

    data = _reply_data()
    (data["choices"][0] if field == "finish_reason" else data)[field] = value
    built = ChatCompletionReply.build(response=None, data=data)  # type: ignore[arg-type]
    expected = construct_type(type_=ChatCompletion, value=data)
    assert built.model_dump() == expected.model_dump()
    if field == "created":
        assert built.created == value


def test_headers_merged_once_are_merged_as_httpx_merges_them() -> None:
    """The merged headers kept per list are httpx2's own merge, follow a change to the
    client's own headers, and each request gets its own copy."""
    import httpx2

    from twelvefold.runtime.openai_client import ReusingHttpClient

    client = ReusingHttpClient()
    stock = httpx2.AsyncClient()
    sent = [("Accept", "application/json"), ("X-Stainless-Retry-Count", "0")]
    first = client.build_request("POST", "http://127.0.0.1:1/v1/x", headers=sent, content=b"{}")
    again = client.build_request("POST", "http://127.0.0.1:1/v1/x", headers=sent, content=b"{}")
    want = stock.build_request("POST", "http://127.0.0.1:1/v1/x", headers=sent, content=b"{}")
    assert first.headers.raw == again.headers.raw == want.headers.raw
    first.headers["X-Changed"] = "1"
    assert "X-Changed" not in again.headers
    client.headers["User-Agent"] = "changed"
    changed = client.build_request("POST", "http://127.0.0.1:1/v1/x", headers=sent, content=b"")
    assert changed.headers["User-Agent"] == "changed"


def test_a_first_try_sends_the_bytes_openai_encodes_for_its_body(
    openai_server: ScriptedOpenAI,
) -> None:
    """A first try's body is encoded around its messages once per step shape, model and
    temperature (`BodyParts`): on the wire it is byte for byte what openai's own encoder
    (`openapi_dumps`) makes of the whole body, and the reply is parsed as before. One
    model through every case, so a part kept for one case is never sent for another."""
    from openai._utils._json import openapi_dumps

    for mode in ("tools", "json"):
        model = OpenAIModel(
            model='m "quoted" ø', base_url=openai_server.base_url, api_key="k", mode=mode
        )
        for temperature in (None, 1, 1.0, 0.25, None):
            for text in ("add 1 and 2", 'ajoute « un » et "2" — 加\\n\u2028'):
                req = request()
                action = dataclasses.replace(req.action, temperature=temperature)
                messages = [*req.messages[:1], {"role": "user", "content": text}]
                req = dataclasses.replace(req, action=action, messages=messages)
                openai_server.wire.clear()
                if mode == "tools":
                    openai_server.reply_tool({"choice": {"type": "Subtract", "a": 3, "b": 1}})
                else:
                    openai_server.reply_json({"choice": {"type": "Subtract", "a": 3, "b": 1}})
                reply = complete(model, req)
                assert reply.output == Subtract(a=3, b=1)
                ((_, _, sent),) = openai_server.wire
                assert sent == openapi_dumps(model.request_body(req)), (mode, temperature, text)


BUILT: dict[str, dict[str, Any]] = {
    "openai's request": {"headers": [("Accept", "application/json"), ("X-A", "1")]},
    "a second host": {"url": "http://[::1]:8080/v1/x", "headers": [("X-A", "1")]},
    "userinfo and port": {"url": "http://u:p@127.0.0.1:1/v1/x", "headers": [("X-A", "1")]},
    "a host of its own": {"headers": [("Host", "example.org"), ("X-A", "1")]},
    "a length of its own": {"headers": [("content-length", "2"), ("X-A", "1")]},
    "chunked": {"headers": [("Transfer-Encoding", "chunked")]},
    "an empty body": {"headers": [("X-A", "1")], "content": b""},
    "text": {"headers": [("X-A", "1")], "content": "é"},
    "a query": {"headers": [("X-A", "1")], "params": {"q": "1"}},
    "a query in the URL": {"url": "http://127.0.0.1:1/v1/x?q=1", "headers": [("X-A", "1")]},
    "no query given": {"url": "http://127.0.0.1:1/v1/x?q=1", "headers": [], "params": {}},
    "a cookie": {"headers": [("X-A", "1")], "cookies": {"c": "1"}},
    "extensions": {"headers": [("X-A", "1")], "extensions": {"sni_hostname": "a"}},
    "a timeout": {"headers": [("X-A", "1")], "timeout": 3.0},
    "non-ASCII header": {"headers": [("X-A", "é".encode("latin-1"))]},
}


@pytest.mark.parametrize("case", list(BUILT))
def test_a_request_built_from_kept_headers_is_httpx2s_own(case: str) -> None:
    """`ReusingHttpClient.build_request` keeps a request's headers per header list and
    host: the `Request` is the one httpx2's own `build_request` makes (method, URL,
    headers in order, body, extensions), first and kept, and a copy each time."""
    from openai import DefaultAioHttpClient

    from twelvefold.runtime.openai_client import ReusingHttpClient

    arguments = {"url": "http://127.0.0.1:1/v1/x", "content": b'{"a":1}', **BUILT[case]}
    for client_cookies in (False, True):
        ours, stock = ReusingHttpClient(), DefaultAioHttpClient()
        if client_cookies:
            ours.cookies.set("k", "v", domain="127.0.0.1")
            stock.cookies.set("k", "v", domain="127.0.0.1")
        want = stock.build_request("POST", **arguments)
        first = ours.build_request("POST", **arguments)
        again = ours.build_request("POST", **arguments)
        for got in (first, again):
            assert (got.method, got.url, got.headers.raw) == (
                want.method,
                want.url,
                want.headers.raw,
            )
            assert (got.content, got.extensions) == (want.content, want.extensions)
            assert got.headers.encoding == want.headers.encoding
            assert type(got.stream) is type(want.stream)
        first.headers["X-Changed"] = "1"
        assert "X-Changed" not in again.headers
        ours.headers["User-Agent"] = stock.headers["User-Agent"] = "changed"
        changed = ours.build_request("POST", **arguments)
        assert changed.headers.raw == stock.build_request("POST", **arguments).headers.raw


def test_openais_headers_kept_are_openais_own() -> None:
    """`ReusingClient._build_headers` keeps what openai builds for each retry count,
    auth and default headers, and read timeout: equal to the stock client's through
    changes of the key, the timeout and the client's headers, and a copy each time."""
    import httpx2
    from openai import AsyncOpenAI
    from openai._models import FinalRequestOptions

    from twelvefold.runtime.openai_client import ReusingClient

    settings: dict[str, Any] = {"api_key": "k", "base_url": "http://127.0.0.1:1/v1"}
    ours, stock = ReusingClient(**settings), AsyncOpenAI(**settings)
    ours._platform = stock._platform  # both read the platform once, in a request

    def options(**extra: Any) -> FinalRequestOptions:
        return FinalRequestOptions.construct(
            method="post", url="/chat/completions", security={"bearer_auth": True}, **extra
        )

    def same(**extra: Any) -> None:
        for retries in (0, 1, 0, 2):
            got = ours._build_headers(options(**extra), retries_taken=retries)
            want = stock._build_headers(options(**extra), retries_taken=retries)
            assert got.raw == want.raw and got.encoding == want.encoding

    same()
    ours._build_headers(options()).update({"X-Edited": "1"})
    assert "X-Edited" not in ours._build_headers(options())
    ours.api_key = stock.api_key = "another"
    same()
    ours.timeout = stock.timeout = httpx2.Timeout(7.0)
    same()
    ours.organization = stock.organization = "org"
    same()
    ours._custom_headers["X-Custom"] = stock._custom_headers["X-Custom"] = "1"
    same()
    same(headers={"X-Per-Call": "1"})
    same(timeout=3.0)
