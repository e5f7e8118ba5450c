"""The model side of an `llm` step: one request in, one validated output of the step's union out.

`Model` is the seam the loop calls. `OpenAIModel` is instructor on the openai client (any
OpenAI-compatible endpoint); cassettes (cassette.py) are `Model`s too. openai and instructor
are imported only when a real model is called, so importing a generated module stays cheap.

The response schema. An `llm` step whose output is one type asks for that type directly: the
tool is named after the type and described by the type's description. A step with several
output types asks for one tool named after the step with a single field, `choice`, whose
value is one of the types tagged with a discriminator field (`"type": "DeployBackend"`), so
types with the same fields (Add and Subtract) stay distinguishable. The tag is removed before
the output reaches the reducer, which receives an instance of the declared class itself.

The request is built once per step shape. instructor's `create` rebuilds everything on every
call (its response model, the tool's JSON schema, a walk of both for async validators),
which was most of a call's CPU. `PreparedRequest` has instructor's own handlers do that work
once, then per call only convert the messages, validate the reply with the prepared model
and, when it does not validate, write the re-ask; the openai client sends the request
(runtime/openai_client.py: `AsyncOpenAI` with what it redid per request done once).
"""

from __future__ import annotations

import copy
import functools
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .names import declared_name
from .ratelimit import PROCESS_LIMITER, RateLimiter, retry_after
from .records import builder, quick_init, record
from .redact import validation_problems
from .spec import AgentSpec
from .types import CallModel, ErrorInfo, Usage
from .usage import token_count_error, valid_tokens

if TYPE_CHECKING:  # asyncio loads when a thread runs, not when an agent is imported
    import asyncio

DEFAULT_MODEL = "gpt-4o-mini"
"""Used when neither `--model`, the step's `model` nor OPENAI_MODEL names one."""

ModelMode = Literal["tools", "json"]


@record(slots=True)
class ModelRequest:
    """What the loop asks of the model at one `llm` step of one thread."""

    agent: AgentSpec
    action: CallModel
    messages: list[dict[str, str]]
    thread_id: str
    seq: int
    """The thread's event count when the call is made (cassettes key on it)."""
    budget_spent: Callable[[Usage], bool] | None = None
    """Whether the call's attempts so far, their usage added up (as `ModelError.usage`
    carries it), have reached one of the agent's budgets (`max_tokens`, `max_cost`), as
    the reducer counts the step's failure (runtime/loop.py, `budget_check`). A model that
    sends more than one request per call (`OpenAIModel`'s re-asks of an invalid output)
    sends no more once it says so, so that a budget is crossed by one request at most.
    None when the agent has no budget (nothing to ask)."""
    attempts: Attempts | None = None
    """Where a model that sends more than one request per call keeps what its finished
    attempts were paid for, added up, as each reply comes back (`Attempts.paid`). The
    loop reads it when the call ends without saying (cut at `model_call_timeout`, or
    raising something other than a `ModelError`): those replies were paid for too, and
    the step's failure records them. None when nobody reads it."""


class Attempts:
    """A model call's finished attempts, their usage added up so far (see
    `ModelRequest.attempts`): what `ModelError.usage` would carry if the call failed now.
    A custom `Model` that re-asks may keep it too; one that never sets it records no
    tokens for a call it does not finish."""

    __slots__ = ("paid",)

    def __init__(self) -> None:
        self.paid: Usage | None = None


@record(slots=True)
class ModelReply:
    output: BaseModel
    """An instance of exactly one of `action.outputs`."""
    usage: Usage
    model: str | None = None
    """The model that answered, as the provider names it (for prices and traces)."""
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()


quick_init(ModelReply)  # every model call makes one (runtime/records.py)
build_model_request = builder(ModelRequest)


class ModelError(Exception):
    """The model could not produce a valid output (after its retries), or could not be reached.

    `usage` is what the failed call was paid for, as the endpoint reported it: every
    attempt's tokens added up (the first try and its re-asks), or None when no reply came
    (a connection error, an HTTP error status)."""

    def __init__(
        self, error: ErrorInfo, usage: Usage | None = None, *, retry_after: float | None = None
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.usage = usage
        self.retry_after = retry_after
        """Seconds a 429 asked to wait, set when the openai client would not wait that
        long itself (over `CLIENT_RETRY_AFTER_LIMIT`): the loop waits and calls again."""


class StopsTheRun(Exception):
    """Raised by a `Model` that cannot go on for a reason of the runtime's own, not of the
    call (a cassette that cannot be recorded to): the run stops without an event, as
    after a crash, and the step is called again when the thread is resumed. Anything
    else a model raises fails the step (runtime/loop.py, `model_failure`)."""


class Model(Protocol):
    async def complete(self, request: ModelRequest) -> ModelReply: ...


# ---- the response model ------------------------------------------------------------

DISCRIMINATOR_NAMES = ("type", "kind", "variant", "output_type")
"""The tag field of a union's choices: the first name no output type uses as a field (when
every one is a field, `output_type` with underscores added until it is free)."""


@record(slots=True)
class ResponseShape:
    """The pydantic model the model is asked for, and how to get the declared value back."""

    model: type[BaseModel]
    outputs: tuple[type[BaseModel], ...]
    tag: str | None
    """The discriminator field, or None when the step has a single output type."""

    def unwrap(self, parsed: BaseModel) -> BaseModel:
        """The declared class's own instance (instructor and the tag use look-alike classes)."""
        if self.tag is None:
            return self.outputs[0].model_validate(parsed.model_dump(by_alias=True))
        choice: BaseModel = parsed.choice  # type: ignore[attr-defined]
        declared = next(t for t in self.outputs if declared_name(t) == getattr(choice, self.tag))
        return declared.model_validate(choice.model_dump(exclude={self.tag}, by_alias=True))


@functools.lru_cache(maxsize=256)
def response_shape(step: str, outputs: tuple[type[BaseModel], ...]) -> ResponseShape:
    """The response model for an `llm` step's declared union (see the module docstring)."""
    if not outputs:
        raise ValueError(f"llm step `{step}` declares no output types")
    if len(outputs) == 1:
        return ResponseShape(_strict_copy(outputs[0], tag=None), outputs, None)
    used = {f.alias or name for t in outputs for name, f in t.model_fields.items()}
    used |= {name for t in outputs for name in t.model_fields}
    tag = discriminator(used)
    choices = tuple(_tagged(t, tag) for t in outputs)
    choice: Any = Annotated[Union[choices], Field(discriminator=tag)]  # noqa: UP007
    wrapper = create_model(
        step,
        __base__=_Response,
        __doc__=" | ".join(declared_name(t) for t in outputs),
        choice=(choice, ...),
    )
    return ResponseShape(wrapper, outputs, tag)


def discriminator(field_names: set[str]) -> str:
    """The tag field for a union whose types use `field_names` (see DISCRIMINATOR_NAMES)."""
    tag = next((n for n in DISCRIMINATOR_NAMES if n not in field_names), None)
    if tag is not None:
        return tag
    tag = DISCRIMINATOR_NAMES[-1]
    while tag in field_names:
        tag += "_"
    return tag


def _tagged(declared: type[BaseModel], tag: str) -> type[BaseModel]:
    return _strict_copy(declared, tag)


def _strict_copy(declared: type[BaseModel], tag: str | None) -> type[BaseModel]:
    """`declared`'s fields, after a constant `tag` field naming it; extra keys are refused."""
    declared_as = declared_name(declared)
    fields: dict[str, Any] = {tag: (Literal[declared_as], ...)} if tag else {}
    fields.update({name: (f.annotation, f) for name, f in declared.model_fields.items()})
    # The declared class's config comes along (e.g. `allow_inf_nan=False`): what the
    # declared class would refuse must be refused here, where instructor re-asks.
    # (Config given as class keywords: pydantic merges them over _Response's own config.)
    config = {**declared.model_config, "extra": "forbid"}
    copy: type[BaseModel] = create_model(
        declared_as,
        __base__=_Response,
        __doc__=declared.__doc__,
        __cls_kwargs__=config,
        **fields,
    )
    return copy


def _keep_description_empty(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    schema.setdefault("description", "")


class _Response(BaseModel):
    """The base of the models a request asks for: strict, and described only by the user.

    Its schema names `$defs` by the declared types' names: pydantic would qualify a name
    shared by two classes (the tagged copy and the declared class a recursive field
    refers to) with their module paths, which hold the generated module's cache hash, so
    editing a comment would change the schema the model sees.
    """

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        # No description is no description: instructor would write its own sentence.
        json_schema_extra=_keep_description_empty,
        # Built when a request first needs it (its copies too): importing stays cheap.
        defer_build=True,
    )

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # Computed once per class and arguments (about half a millisecond each time, and
        # JSON mode asks for it on every call); a copy, since callers may edit it.
        return copy.deepcopy(_readable_schema(cls, args, tuple(sorted(kwargs.items()))))


@functools.lru_cache(maxsize=256)
def _readable_schema(
    cls: type[_Response], args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]
) -> dict[str, Any]:
    return readable_defs(super(_Response, cls).model_json_schema(*args, **dict(kwargs)))


def readable_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with each `$defs` entry keyed by its title (`Tree`, then `Tree_2` for a
    second class of that name, in pydantic's order) and every reference following it
    (`$ref`s and a discriminator's mapping)."""
    defs = schema.get("$defs")
    if not isinstance(defs, dict):
        return schema
    renamed: dict[str, str] = {}
    for key, definition in defs.items():
        base = str(definition.get("title") or key)
        name, number = base, 2
        while name in renamed.values():
            name, number = f"{base}_{number}", number + 1
        renamed[key] = name

    def follow(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: follow(v) for k, v in node.items()}
        if isinstance(node, list):
            return [follow(v) for v in node]
        return _ref(renamed, node) if isinstance(node, str) else node

    result: dict[str, Any] = follow({k: v for k, v in schema.items() if k != "$defs"})
    result["$defs"] = {renamed[k]: follow(v) for k, v in defs.items()}
    return result


def _ref(renamed: dict[str, str], ref: str) -> str:
    prefix = "#/$defs/"
    key = ref.removeprefix(prefix)
    return prefix + renamed[key] if ref.startswith(prefix) and key in renamed else ref


def resolve_model_name(override: str | None, action: CallModel) -> str:
    """`--model` (the constructor), then the step's `model`, then OPENAI_MODEL, then a default."""
    return override or action.model or os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL


# ---- the request, prepared once per step shape ------------------------------------------


@record(slots=True)
class PreparedRequest:
    """An `llm` step's request for one mode, prepared by instructor's own handlers once.

    instructor's `create` runs these handlers on every call after rebuilding their inputs;
    here `request_handler` runs once for the step shape (the tool and `tool_choice`, or
    `response_format`), and each call only converts its messages, validates the reply with
    the prepared model (`response_parser`, strict, as `create` does) and, when it does not
    validate, writes the re-ask that feeds the error back (`reask_handler`).
    """

    shape: ResponseShape
    model: type[BaseModel]
    """instructor's response model: the shape's model with instructor's schema helpers."""
    arguments: dict[str, Any]
    """What the mode adds to every request: `tools` and `tool_choice`, or `response_format`.
    Shared by every call: never edited."""
    handlers: Any
    """instructor's handlers for the mode (`mode_registry.get_handlers`)."""
    mode: ModelMode

    def messages(self, messages: list[dict[str, str]]) -> list[dict[str, Any]]:
        """The messages as instructor sends them (a new list: re-asks append to it)."""
        converted: list[dict[str, Any]] = [dict(m) for m in messages]
        if self.mode == "json":  # the schema paragraph goes into the system message
            converted = self.handlers.request_handler(self.model, {"messages": converted})[1][
                "messages"
            ]
        if self.handlers.message_converter is not None:
            converted = self.handlers.message_converter(converted)
        return converted

    def parse(self, completion: Any) -> BaseModel:
        """The reply validated by the prepared model; raises what instructor's parser raises
        (`_reasked()`, its `IncompleteOutputException` for a reply cut off, or others)."""
        parsed: BaseModel = self.handlers.response_parser(
            response=completion,
            response_model=self.model,
            validation_context=None,
            strict=True,
            stream=False,
            is_async=True,
        )
        return parsed

    def reask(self, body: dict[str, Any], completion: Any, error: Exception) -> dict[str, Any]:
        """`body` with the reply and its validation error appended, as instructor re-asks."""
        reasked: dict[str, Any] = self.handlers.reask_handler(
            kwargs=body, response=completion, exception=error
        )
        return reasked


@functools.lru_cache(maxsize=256)
def prepared_request(
    step: str, outputs: tuple[type[BaseModel], ...], mode: ModelMode
) -> PreparedRequest:
    """The request for an `llm` step's declared union in `mode` (see `PreparedRequest`)."""
    from instructor import Mode
    from instructor.processing.response import handle_response_model
    from instructor.v2.core.providers import Provider
    from instructor.v2.core.registry import mode_registry

    shape = response_shape(step, outputs)
    instructor_mode = Mode.TOOLS if mode == "tools" else Mode.JSON
    model, arguments = handle_response_model(shape.model, mode=instructor_mode)
    arguments.pop("messages", None)  # each call's own (see `PreparedRequest.messages`)
    if model is None:  # pragma: no cover - instructor changed what it returns
        raise RuntimeError("instructor prepared no response model")
    handlers = mode_registry.get_handlers(Provider.OPENAI, instructor_mode)
    return PreparedRequest(shape, model, arguments, handlers, mode)


def _reasked() -> tuple[type[Exception], ...]:
    """What instructor's retry loop re-asks: a reply that does not validate (its list).
    Anything else its parser raises (a refusal) ends the call at once, as there."""
    import json  # here, not at the top: importing the runtime needs no json module

    from instructor.core.exceptions import AsyncValidationError, ResponseParsingError

    return (ValidationError, json.JSONDecodeError, ResponseParsingError, AsyncValidationError)


# ---- OpenAI-compatible endpoints through instructor -----------------------------------

BODIES_KEPT = 256
"""How many first-try bodies (one a step shape, model and temperature) a model keeps
encoded around their messages; past that it starts over."""


MISSING_KEY = (
    "no OPENAI_API_KEY is set and no OPENAI_BASE_URL, so the call would go to the default "
    "endpoint (api.openai.com) without a key: set OPENAI_API_KEY, or OPENAI_BASE_URL for "
    "another OpenAI-compatible endpoint (a local one may need no key), or replay recorded "
    "outputs with `--cassette FILE`; then retry the thread"
)
"""A model call's failure when it has no key for the default endpoint (nothing was sent)."""


class OpenAIModel:
    """Any OpenAI-compatible chat-completions endpoint, validated by instructor.

    `mode="tools"` (the default) asks for a forced tool call; `mode="json"` asks for JSON
    content, for endpoints without tool calling (instructor then adds a system paragraph with
    the schema: `twelvefold prompt --mode json` shows it). A malformed output is re-asked with
    the validation error `action.retries` times, then the call fails with `ModelError`.
    `transport_retries` is the openai client's own retrying of connection errors, 429 and 5xx.
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        mode: ModelMode = "tools",
        *,
        transport_retries: int = 2,
    ) -> None:
        self.model = model
        self.transport_retries = transport_retries
        self.base_url = base_url
        self.api_key = api_key
        self.mode: ModelMode = mode
        self._clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        """The openai client of each event loop using this model (`_client_of_this_loop`)."""
        self._clients_lock = threading.Lock()
        self.limiter: RateLimiter = PROCESS_LIMITER
        """Told of every 429's `Retry-After`, so other calls to that model wait it out too
        (runtime/ratelimit.py); the openai client itself retries the call that got it."""
        self._bodies: dict[tuple[Any, ...], tuple[PreparedRequest, Any]] = {}
        """Each step shape's first-try body encoded around its messages (`_first_try`)."""

    async def _client_of_this_loop(self) -> Any:
        """The openai client of the running event loop, made on the loop's first call.

        A client's connection pool belongs to the loop it was opened on, and one model may
        serve several loops at once (two synchronous `Runtime`s in two OS threads each run
        a loop of their own), so each loop gets its own client. It stays open until
        `aclose` in that loop, or the loop's end under `asyncio.run`, closes it
        (`_closed_with`); neither touches another loop's client.
        """
        import asyncio

        loop = asyncio.get_running_loop()
        held = self._clients.get(loop)  # one dict lookup: safe beside the locked writes
        if held is not None:
            return held.client
        client = _make_client(self.base_url, self.api_key, self.transport_retries, self.limiter)
        closer = _closed_with(client, functools.partial(self._forget, loop, client))
        with self._clients_lock:
            # A loop closed without `aclose` and without `asyncio.run`'s shutdown (a
            # hand-made loop) left its entry behind: its client cannot be closed any more,
            # only forgotten.
            for ended in [other for other in self._clients if other.is_closed()]:
                del self._clients[ended]
            self._clients[loop] = _LoopClient(client, closer)
        await anext(closer)  # runs to its `yield` at once: the entry is never seen unstarted
        return client

    def _forget(self, loop: asyncio.AbstractEventLoop, client: Any) -> None:
        """Drop `loop`'s entry if it still holds `client` (it is being closed)."""
        with self._clients_lock:
            held = self._clients.get(loop)
            if held is not None and held.client is client:
                del self._clients[loop]

    async def aclose(self) -> None:
        """Close the running event loop's client and its connection pool, and only that
        loop's (`Runtime.close`, the server and the worker call it in the loop they ran
        in; a loop `asyncio.run` ends closes its own too). aiohttp reports a pool left
        open when it is collected. A later call in this loop opens a new client."""
        import asyncio

        with self._clients_lock:
            held = self._clients.pop(asyncio.get_running_loop(), None)
        if held is not None:
            await held.closer.aclose()  # its `finally` closes the client

    def request_body(self, request: ModelRequest) -> dict[str, Any]:
        """The chat-completions request this call sends first (re-asks add messages)."""
        action = request.action
        prepared = prepared_request(action.step, action.outputs, self.mode)
        return self._body(action, prepared, prepared.messages(request.messages))

    def _first_try(self, request: ModelRequest, prepared: PreparedRequest) -> bytes:
        """`request_body`'s JSON bytes, as openai would encode them: the parts around the
        messages encoded once per step shape, model and temperature (`BodyParts`)."""
        from .openai_client import BodyParts

        action = request.action
        temperature = action.temperature  # (1 and 1.0 are equal keys, not equal JSON)
        key = (resolve_model_name(self.model, action), type(temperature), temperature, action.step)
        kept = self._bodies.get(key)
        if kept is None or kept[0] is not prepared:  # new, or another step of that name
            if len(self._bodies) >= BODIES_KEPT:
                self._bodies.clear()
            kept = self._bodies[key] = (prepared, BodyParts(self._body(action, prepared, [])))
        parts: BodyParts = kept[1]
        return parts.encode(prepared.messages(request.messages))

    def _body(
        self, action: CallModel, prepared: PreparedRequest, messages: list[dict[str, Any]]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": resolve_model_name(self.model, action),
            "messages": messages,
            **prepared.arguments,
        }
        if action.temperature is not None:
            body["temperature"] = action.temperature
        if self.mode == "tools":
            # One step, one decision: a second tool call would have nowhere to go.
            body["parallel_tool_calls"] = False
        return body

    async def preview(self, request: ModelRequest) -> dict[str, Any]:
        """The exact chat-completions request this call would send, without sending it."""
        return {k: v for k, v in self.request_body(request).items() if _is_json(v)}

    async def complete(self, request: ModelRequest) -> ModelReply:
        if self.missing_key():  # said at once: no connection is tried for a sure 401
            raise ModelError(ErrorInfo("MissingAPIKey", MISSING_KEY))
        prepared = prepared_request(request.action.step, request.action.outputs, self.mode)
        started = time.perf_counter()
        parsed, completion, paid = await self._validated(request, prepared, started)
        usage = replace(paid, latency_ms=(time.perf_counter() - started) * 1000)
        calls = _tool_calls(completion)
        if calls > 1:  # asked for one; never drop the others without a trace
            raise ModelError(
                ErrorInfo(
                    "InvalidOutput",
                    f"the model made {calls} tool calls at `{request.action.step}`; "
                    "one was asked for (parallel_tool_calls: false)",
                ),
                usage,
            )
        return ModelReply(
            prepared.shape.unwrap(parsed),
            usage,
            model=_text(getattr(completion, "model", None)),
            response_id=_text(getattr(completion, "id", None)),
            finish_reasons=tuple(
                reason
                for choice in getattr(completion, "choices", None) or []
                if (reason := _text(getattr(choice, "finish_reason", None))) is not None
            ),
        )

    async def _validated(
        self, request: ModelRequest, prepared: PreparedRequest, started: float
    ) -> tuple[BaseModel, Any, Usage]:
        """The first reply that validates, its completion, and the usage of every attempt
        added up (`_paid`): instructor's retry loop. A
        failed call's `ModelError` carries that usage too: each reply was paid for.

        A reply that does not validate is re-asked with the error, `retries N` times after
        the first try (outputs the checks before dispatch refused used some of them up),
        and not once the attempts have spent one of the agent's budgets
        (`ModelRequest.budget_spent`); an API error, a reply cut off at the token limit or
        a refusal ends the call at once.
        """
        from instructor.core.exceptions import IncompleteOutputException
        from openai import OpenAIError

        action = request.action
        retries = max(0, action.retries - action.rejections)
        reasked = _reasked()
        client = await self._client_of_this_loop()
        body: dict[str, Any] | None = None  # the first try's JSON, written on a re-ask
        attempt = 0
        paid: Usage | None = None
        while True:
            attempt += 1
            try:
                sent = self._first_try(request, prepared) if body is None else body
                completion = await client.post_chat_completion(sent)
            except OpenAIError as exc:  # the replies before it were paid for
                raise ModelError(_api_error(exc), paid, retry_after=_long_wait(exc)) from exc
            except Exception as exc:  # whatever else the client raises fails the call
                raise ModelError(_invalid_output(action.step, attempt, exc), paid) from exc
            paid = _paid(paid, completion, started)
            if (bad_count := token_count_error(paid)) is not None:
                raise ModelError(bad_count)  # refused as the loop refuses any model's
            if request.attempts is not None:  # paid, whatever ends the call from here
                request.attempts.paid = paid
            try:
                return prepared.parse(completion), completion, paid
            except IncompleteOutputException as exc:
                # finish_reason "length": the reply was cut off at the token limit. A re-ask
                # would be cut off the same way, so the step fails and `on error` decides.
                raise ModelError(
                    ErrorInfo(
                        "IncompleteOutput",
                        f"the model's reply for `{action.step}` was cut off at its token "
                        "limit (finish_reason: length)",
                    ),
                    paid,
                ) from exc
            except reasked as exc:
                if attempt > retries:
                    raise ModelError(_invalid_output(action.step, attempt, exc), paid) from exc
                spent = request.budget_spent
                if spent is not None and spent(paid):
                    # The attempts so far spent a budget: a re-ask is a model call, and
                    # none starts once a budget is spent. The step fails with what was
                    # paid, and the reducer, counting it, sends the thread where the
                    # budget says (docs/language.md, "Budgets").
                    error = _invalid_output(action.step, attempt, exc, stopped=BUDGET_STOP)
                    raise ModelError(error, paid) from exc
                if body is None:
                    body = self.request_body(request)
                body = prepared.reask(body, completion, exc)
            except Exception as exc:  # instructor gives up at once on anything else
                raise ModelError(_invalid_output(action.step, attempt, exc), paid) from exc

    def missing_key(self) -> bool:
        """Whether a call would go to the default endpoint (api.openai.com) with no key:
        neither a base URL nor a key given, here or in OPENAI_BASE_URL / OPENAI_API_KEY. A
        base URL of its own (a local endpoint) may need no key."""
        base_url = self.base_url or os.environ.get("OPENAI_BASE_URL")
        return not base_url and not (self.api_key or os.environ.get("OPENAI_API_KEY"))

    def requested_model(self, action: CallModel) -> str:
        """The model this call asks for (`resolve_model_name`)."""
        return resolve_model_name(self.model, action)


@record
class _LoopClient:
    """One event loop's openai client and the generator that closes it (`_closed_with`)."""

    client: Any
    closer: AsyncGenerator[None, None]


async def _closed_with(client: Any, forget: Callable[[], None]) -> AsyncGenerator[None, None]:
    """Closes `client` when its event loop is shut down: started once in that loop and held
    open, it is among the async generators `asyncio.run` closes as it ends its loop
    (`loop.shutdown_asyncgens`), and its `finally` then closes the pool there, the one
    place it can be closed (an ended loop cannot run the close). `aclose` closes it early.
    `forget` drops the model's entry for the loop, so an ended loop is not kept."""
    try:
        yield
    finally:
        forget()
        await client.close()


def _make_client(
    base_url: str | None,
    api_key: str | None,
    transport_retries: int,
    limiter: RateLimiter | None = None,
) -> Any:
    import logging

    from .openai_client import ReusingClient, ReusingHttpClient

    # instructor logs what goes wrong in its handlers at WARNING and above; with no
    # logging configured, Python would print those lines on stderr beside our own
    # messages. The outcome reaches the user as a step failure in the log instead. A
    # NullHandler keeps them off stderr without hiding them from an application that
    # configures logging (they still propagate to its handlers). Added here, before
    # instructor's first use, so importing the runtime loads no logging.
    quiet = logging.getLogger("instructor")
    if not any(isinstance(h, logging.NullHandler) for h in quiet.handlers):
        quiet.addHandler(logging.NullHandler())
    hooks: dict[str, list[Callable[..., Any]]] = {}
    if limiter is not None:
        hooks["response"] = [functools.partial(_pause_on_429, limiter)]
    return ReusingClient(
        base_url=base_url or os.environ.get("OPENAI_BASE_URL") or None,
        # A local endpoint needs no key; the openai client insists on one.
        api_key=api_key or os.environ.get("OPENAI_API_KEY") or "unset",
        # Connection errors, 429 and 5xx are retried by the openai client with backoff
        # (after a 429's `Retry-After`, when it is at most two minutes; a longer one the
        # loop waits out: `ModelError.retry_after`).
        max_retries=transport_retries,
        # aiohttp underneath (openai's option "for improved concurrency performance"):
        # about half the CPU of its default httpx transport per request, and no scan of
        # every pooled connection for each request (httpcore's), which grows with threads.
        # (ReusingHttpClient is DefaultAioHttpClient merging URLs and headers once.)
        http_client=ReusingHttpClient(event_hooks=hooks),
    )


MAX_PAUSE_SECONDS = 600.0
"""The longest a 429's `Retry-After` holds back other calls (a header is not trusted to
stop a process for a day)."""


CLIENT_RETRY_AFTER_LIMIT = 120.0
"""The longest `Retry-After` the openai client waits for itself (its
`MAX_RETRY_AFTER_DELAY`): a 429 asking for longer is not retried by it at all."""


def _long_wait(exc: Exception) -> float | None:
    """A 429's `Retry-After` in seconds when the openai client did not retry it because
    it was longer than the client waits (None otherwise: retried, or not a 429)."""
    response = getattr(exc, "response", None)
    if getattr(response, "status_code", None) != 429:
        return None
    seconds = retry_after(response.headers)  # type: ignore[union-attr]
    return seconds if seconds is not None and seconds > CLIENT_RETRY_AFTER_LIMIT else None


async def _pause_on_429(limiter: RateLimiter, response: Any) -> None:
    """An httpx response hook: a 429 pauses every call to its model (`RateLimiter.pause`)."""
    if response.status_code != 429:
        return
    import json  # here, not at the top: only a 429 reads the request back

    seconds = retry_after(response.headers)
    try:
        model = json.loads(response.request.content).get("model")
    except (ValueError, AttributeError):
        return
    if seconds is not None and isinstance(model, str):
        limiter.pause(model, min(seconds, MAX_PAUSE_SECONDS))


def _text(value: Any) -> str | None:
    """A string the provider sent, cut to 200 characters (it ends up in logs and spans)."""
    return value[:200] if isinstance(value, str) and value else None


def _tool_calls(completion: Any) -> int:
    choices = getattr(completion, "choices", None) or []
    message = getattr(choices[0], "message", None) if choices else None
    return len(getattr(message, "tool_calls", None) or [])


def _paid(before: Usage | None, completion: Any, started: float) -> Usage:
    """The usage of a call's attempts so far: `before` (the earlier attempts', None for
    the first) with `completion`'s tokens added. A side that any attempt sent no count
    for is unknown (None) for the whole call: the attempts were all paid for, and a sum
    that left one out would look smaller than what was spent (a budget counts an unknown
    count as spending what is left of it: `loop.uncounted`)."""
    counts = _counts(completion)
    if not all(n is None or valid_tokens(n) for n in counts):  # not added: refused as sent
        return Usage(
            latency_ms=(time.perf_counter() - started) * 1000,
            input_tokens=counts[0],
            output_tokens=counts[1],
        )
    earlier = (0, 0) if before is None else (before.input_tokens, before.output_tokens)
    added = tuple(
        None if a is None or b is None else a + b for a, b in zip(earlier, counts, strict=True)
    )
    return Usage(
        latency_ms=(time.perf_counter() - started) * 1000,
        input_tokens=added[0],
        output_tokens=added[1],
    )


def _counts(completion: Any) -> tuple[Any, Any]:
    """(input, output) token counts as the provider reported them, None where it sent
    none. A count that is not a `valid_tokens` (negative, fractional, a bool, a string,
    above `MAX_CALL_TOKENS`) is kept as it came, to be refused (`token_count_error` fails
    the step): read as "no count", it would make the call's cost look smaller than it was."""
    usage = getattr(completion, "usage", None)
    counts = getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
    total = getattr(usage, "total_tokens", None)
    if total is None:
        return counts
    if None not in counts:
        prompt, completion_tokens = counts
        if valid_tokens(prompt) and valid_tokens(completion_tokens) and valid_tokens(total):
            # A total above the two sides says more was paid for than they show: the
            # rest counts as output (as a lone total does, below).
            return prompt, max(completion_tokens, total - prompt)
        return counts
    # Some endpoints send only the total, or the total and one side. What they counted
    # was paid for: read as no count, a budget would never see it. With neither side the
    # total counts as output tokens and the input as none (output is the dearer kind at
    # every provider in the price table: the cost is not under-counted; a total that is
    # no count is refused as one would be); with one side, the other is the total less it.
    prompt, completion_tokens = counts
    if prompt is None and completion_tokens is None:
        return (0 if valid_tokens(total) else None), total
    if not valid_tokens(total):
        return counts
    if prompt is None:
        missing = total - completion_tokens if valid_tokens(completion_tokens) else None
        return (missing if valid_tokens(missing) else None), completion_tokens
    missing = total - prompt if valid_tokens(prompt) else None
    return prompt, (missing if valid_tokens(missing) else None)


BUDGET_STOP = "not asked again: the agent's budget is spent"
"""Why a step's re-asks ended before its `retries` did (`_invalid_output`'s `stopped`)."""


def _invalid_output(step: str, attempts: int, cause: Exception, stopped: str = "") -> ErrorInfo:
    if isinstance(cause, ValidationError):
        detail = validation_problems(cause, whole="output")
    else:
        detail = _first_line(str(cause))
    why = f" ({stopped})" if stopped else ""
    return ErrorInfo(
        "InvalidOutput",
        f"no valid output for `{step}` after {attempts} attempt(s){why}: {detail}",
    )


def _api_error(exc: Exception) -> ErrorInfo:
    refused = _connection_error(exc)
    if refused is not None:
        return ErrorInfo("APIConnectionError", _first_line(str(refused)))
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    return ErrorInfo(type(exc).__name__, _first_line(str(message or exc)))


def _connection_error(exc: Exception) -> BaseException | None:
    """The connection error behind an `APITimeoutError` that was none (a refused connection,
    an unknown host), or None.

    openai's aiohttp transport maps every aiohttp connection error to a connect timeout
    (noted in the review of openai-python's HTTPX2 migration, #3594); the step's error
    should say the endpoint could not be reached, as it does with httpx.
    """
    import aiohttp
    from openai import APITimeoutError

    if not isinstance(exc, APITimeoutError):
        return None
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectionError):
            return None if isinstance(cause, TimeoutError) else cause
        cause = cause.__cause__
    return None


def _is_json(value: Any) -> bool:
    import json  # here, not at the top: importing the runtime needs no json module

    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
