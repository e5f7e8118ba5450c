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
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .names import declared_name
from .ratelimit import PROCESS_LIMITER, RateLimiter, retry_after
from .records import builder, quick_init
from .redact import validation_problems
from .spec import AgentSpec
from .types import CallModel, ErrorInfo, Usage

if TYPE_CHECKING:  # asyncio loads when a thread runs, not when an agent is imported
    import asyncio

DEFAULT_MODEL = "gpt-4o-mini"
"""Used when neither `--model`, the step's `model` nor OPENAI_MODEL names one."""

ModelMode = Literal["tools", "json"]


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What the loop asks of the model at one `llm` step of one thread."""

    agent: AgentSpec
    action: CallModel
    messages: list[dict[str, str]]
    thread_id: str
    seq: int
    """The thread's event count when the call is made (cassettes key on it)."""


@dataclass(frozen=True, slots=True)
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
    """The model could not produce a valid output (after its retries), or could not be reached."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(str(error))
        self.error = error


class Model(Protocol):
    async def complete(self, request: ModelRequest) -> ModelReply: ...


# ---- the response model ------------------------------------------------------------

DISCRIMINATOR_NAMES = ("type", "kind", "variant", "output_type")
"""The tag field of a union's choices: the first name no output type uses as a field (when
every one is a field, `output_type` with underscores added until it is free)."""


@dataclass(frozen=True, slots=True)
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
    )

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return readable_defs(super().model_json_schema(*args, **kwargs))


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


# ---- OpenAI-compatible endpoints through instructor -----------------------------------


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
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self.limiter: RateLimiter = PROCESS_LIMITER
        """Told of every 429's `Retry-After`, so other calls to that model wait it out too
        (runtime/ratelimit.py); the openai client itself retries the call that got it."""

    def _instructor(self) -> Any:
        import asyncio

        # The openai client's connection pool belongs to one event loop; the synchronous API
        # may run each call in a fresh loop, so a new loop gets a new client.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = _make_client(
                self.base_url, self.api_key, self.mode, self.transport_retries, self.limiter
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the connection pool (optional: an exiting process closes it anyway)."""
        import asyncio

        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._client.client.close()
        self._client = None

    def request_arguments(self, request: ModelRequest) -> dict[str, Any]:
        """The arguments given to instructor's `create` (before instructor adds the schema)."""
        shape = response_shape(request.action.step, request.action.outputs)
        arguments: dict[str, Any] = {
            "model": resolve_model_name(self.model, request.action),
            "messages": [dict(m) for m in request.messages],
            "response_model": shape.model,
            # `retries N`: N re-asks after the first try, as instructor counts them.
            # Outputs the checks before dispatch refused used some of them up.
            "max_retries": max(0, request.action.retries - request.action.rejections),
        }
        if request.action.temperature is not None:
            arguments["temperature"] = request.action.temperature
        if self.mode == "tools":
            # One step, one decision: a second tool call would have nowhere to go.
            arguments["parallel_tool_calls"] = False
        return arguments

    async def preview(self, request: ModelRequest) -> dict[str, Any]:
        """The exact chat-completions request this call would send, without sending it.

        instructor builds the request as for a real call (tools, schema, its JSON-mode
        system paragraph) and hands it to a hook that keeps it; the client points at a
        loopback port held open but not listening, so the send itself is refused at once.
        """
        import instructor

        captured: list[dict[str, Any]] = []
        with socket.socket() as closed_port:
            closed_port.bind(("127.0.0.1", 0))
            host, port = closed_port.getsockname()[:2]
            client = _make_client(f"http://{host}:{port}/v1", "preview", self.mode, 0)
            client.on("completion:kwargs", lambda *_, **kwargs: captured.append(kwargs))
            arguments = self.request_arguments(request)
            arguments["max_retries"] = 0
            import logging

            quiet = logging.getLogger("instructor")
            level = quiet.level
            quiet.setLevel(logging.CRITICAL)  # the refusal is expected: do not log it
            try:
                with contextlib.suppress(Exception):
                    await client.chat.completions.create_with_completion(**arguments)
            finally:
                quiet.setLevel(level)
        if not captured:  # pragma: no cover - instructor changed its hooks
            raise RuntimeError(f"instructor {instructor.__version__} did not show its request")
        return {k: v for k, v in captured[0].items() if _is_json(v)}

    async def complete(self, request: ModelRequest) -> ModelReply:
        from instructor.core.exceptions import (
            IncompleteOutputException,
            InstructorError,
            InstructorRetryException,
        )
        from openai import OpenAIError

        shape = response_shape(request.action.step, request.action.outputs)
        arguments = self.request_arguments(request)
        arguments["response_model"] = shape.model
        started = time.perf_counter()
        try:
            parsed, completion = await self._instructor().chat.completions.create_with_completion(
                **arguments
            )
        except InstructorRetryException as exc:
            # instructor re-asks only on invalid output; an API error ends the call at once.
            if isinstance(exc.__cause__, OpenAIError):
                raise ModelError(_api_error(exc.__cause__)) from exc
            raise ModelError(_invalid_output(request.action, exc)) from exc
        except IncompleteOutputException as exc:
            # finish_reason "length": the reply was cut off at the token limit. A re-ask
            # would be cut off the same way, so the step fails and `on error` decides.
            raise ModelError(
                ErrorInfo(
                    "IncompleteOutput",
                    f"the model's reply for `{request.action.step}` was cut off at its token "
                    "limit (finish_reason: length)",
                )
            ) from exc
        except OpenAIError as exc:
            raise ModelError(_api_error(exc)) from exc
        except InstructorError as exc:  # any other way instructor gives up is a failed call
            raise ModelError(ErrorInfo(type(exc).__name__, _first_line(str(exc)))) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        calls = _tool_calls(completion)
        if calls > 1:  # asked for one; never drop the others without a trace
            raise ModelError(
                ErrorInfo(
                    "InvalidOutput",
                    f"the model made {calls} tool calls at `{request.action.step}`; "
                    "one was asked for (parallel_tool_calls: false)",
                )
            )
        return ModelReply(
            shape.unwrap(parsed),
            _usage(completion, latency_ms),
            model=_text(getattr(completion, "model", None)),
            response_id=_text(getattr(completion, "id", None)),
            finish_reasons=tuple(
                reason
                for choice in getattr(completion, "choices", None) or []
                if (reason := _text(getattr(choice, "finish_reason", None))) is not None
            ),
        )

    def requested_model(self, action: CallModel) -> str:
        """The model this call asks for (`resolve_model_name`)."""
        return resolve_model_name(self.model, action)


def _make_client(
    base_url: str | None,
    api_key: str | None,
    mode: ModelMode,
    transport_retries: int,
    limiter: RateLimiter | None = None,
) -> Any:
    import logging

    import instructor
    from openai import AsyncOpenAI, DefaultAsyncHttpxClient

    # instructor logs each failed attempt (a reply that does not validate, a retry) at
    # WARNING and above; with no logging configured, Python would print those lines on
    # stderr beside our own messages. The outcome reaches the user as a step failure in the
    # log instead. A NullHandler keeps them off stderr without hiding them from an
    # application that configures logging (they still propagate to its handlers). Added
    # here, before instructor's first use, so importing the runtime loads no logging.
    quiet = logging.getLogger("instructor")
    if not any(isinstance(h, logging.NullHandler) for h in quiet.handlers):
        quiet.addHandler(logging.NullHandler())
    hooks: dict[str, list[Callable[..., Any]]] = {}
    if limiter is not None:
        hooks["response"] = [functools.partial(_pause_on_429, limiter)]
    client = AsyncOpenAI(
        base_url=base_url or os.environ.get("OPENAI_BASE_URL") or None,
        # A local endpoint needs no key; the openai client insists on one.
        api_key=api_key or os.environ.get("OPENAI_API_KEY") or "unset",
        # Connection errors, 429 and 5xx are retried by the openai client with backoff
        # (after a 429's `Retry-After`, when it is at most a minute).
        max_retries=transport_retries,
        http_client=DefaultAsyncHttpxClient(event_hooks=hooks) if hooks else None,
    )
    return instructor.from_openai(
        client, mode=instructor.Mode.TOOLS if mode == "tools" else instructor.Mode.JSON
    )


MAX_PAUSE_SECONDS = 600.0
"""The longest a 429's `Retry-After` holds back other calls (a header is not trusted to
stop a process for a day)."""


async def _pause_on_429(limiter: RateLimiter, response: Any) -> None:
    """An httpx response hook: a 429 pauses every call to its model (`RateLimiter.pause`)."""
    if response.status_code != 429:
        return
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


def _usage(completion: Any, latency_ms: float) -> Usage:
    usage = getattr(completion, "usage", None)
    return Usage(
        latency_ms=latency_ms,
        input_tokens=_tokens(getattr(usage, "prompt_tokens", None)),
        output_tokens=_tokens(getattr(usage, "completion_tokens", None)),
    )


def _tokens(value: Any) -> int | None:
    """A token count as the provider reported it, or None when it sent no count."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _invalid_output(action: CallModel, exc: Exception) -> ErrorInfo:
    attempts = getattr(exc, "n_attempts", action.retries + 1)
    cause = exc.__cause__ or exc
    if isinstance(cause, ValidationError):
        detail = validation_problems(cause, whole="output")
    else:
        detail = _first_line(str(cause))
    return ErrorInfo(
        "InvalidOutput",
        f"no valid output for `{action.step}` after {attempts} attempt(s): {detail}",
    )


def _api_error(exc: Exception) -> ErrorInfo:
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    return ErrorInfo(type(exc).__name__, _first_line(str(message or exc)))


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
