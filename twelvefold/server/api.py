"""The HTTP API under /v1 (issue 10's table; these paths are a contract).

Every route but /healthz needs `Authorization: Bearer TOKEN` (tokens.py); the person
behind the token is the caller, and the service (service.py) decides what they may do.
Request and response bodies are pydantic models, so /openapi.json describes them as
they are. A thread is shown as `ThreadOut`, the JSON of `twelvefold run --json`.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, and
# `Who` is local to `router`.
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from twelvefold.runtime.api import ThreadView
from twelvefold.runtime.store import DAMAGED_ROWS_HELP, DamagedRow, ThreadInfo
from twelvefold.runtime.strict import ParsedJson
from twelvefold.runtime.usage import Totals
from twelvefold.server.bodies import StrictJSONRoute
from twelvefold.server.problems import described_pattern
from twelvefold.server.replies import replies
from twelvefold.server.service import (
    BadInput,
    Caller,
    Forbidden,
    Service,
    ServiceError,
    TooManyAttempts,
    Unauthorized,
)
from twelvefold.server.throttle import Throttle
from twelvefold.server.tokens import TokenStore

StatusName = Literal["running", "waiting", "finished", "failed", "cancelled"]
ThreadId = Annotated[str, Path(min_length=1, max_length=100, description="The thread's id.")]
WAIT = Query(False, description="Answer once the thread pauses or ends (bounded; else 202).")
LOCAL_PERSON = "local"
"""The caller of a server started with --insecure-local (no tokens)."""


class ErrorOut(BaseModel):
    type: str
    message: str


class UsageOut(BaseModel):
    """What a thread cost so far, its sub-agents' threads included (the `usage` of
    `twelvefold show --json`; docs/runtime.md, "Cost")."""

    steps: int = Field(ge=0, description="Model and tool calls, failed ones included.")
    model_calls: int = Field(ge=0)
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cost_usd: float | None = Field(
        ge=0,
        description="USD of the priced calls; null when model calls were made and none was "
        "priced (unknown), 0 when none was made.",
    )
    unpriced_calls: int = Field(ge=0, description="Calls `cost_usd` leaves out (no price).")
    waited_seconds: float = Field(ge=0, description="Time spent waiting for people.")

    @classmethod
    def of(cls, totals: Totals) -> "UsageOut":
        return cls.model_validate(totals.to_json())


class ThreadOut(BaseModel):
    """Where a thread stands (the JSON of `twelvefold run --json`)."""

    thread_id: str
    agent: str
    status: StatusName
    step: str
    events: int = Field(description="How many events the thread holds.")
    waiting_for: Literal["approval", "answer", "event", "timer", "agent"] | None
    request: str | None = Field(description="The pending request (a decision names it).")
    question: str | None
    output: Any = Field(None, description="The thread's result, when finished.")
    error: ErrorOut | None
    notified: bool | None
    notice_failed: list[str]
    event_type: str | None = Field(
        None, description="While waiting for an outside event: its type (send it to /signals)."
    )
    wake_at: str | None = Field(
        None, description="When a sleep or a wait's timeout ends the wait (ISO 8601, UTC)."
    )
    child: str | None = Field(
        None, description="While a sub-agent step waits: the child thread it waits for."
    )
    parent: str | None = Field(
        None, description="For a sub-agent's thread: the parent thread that started it."
    )
    usage: UsageOut
    retry_at: str | None = Field(
        None,
        description="While a failed tool attempt waits out its `retry … backoff`: when the "
        "next attempt is due (ISO 8601, UTC).",
    )

    @classmethod
    def of(cls, view: ThreadView) -> "ThreadOut":
        return cls.model_validate(view.to_json())


class ThreadSummary(BaseModel):
    """A thread as a listing shows it."""

    thread_id: str
    agent: str
    status: str = Field(
        description="One of running, waiting, finished, failed, cancelled; a row this version"
        " does not know (written by a newer version, or damaged) shows its status as stored;"
        ' "damaged" for a row that cannot be read at all (see `damaged`).'
    )
    step: str
    events: int
    request: str | None
    created_at: str
    updated_at: str
    usage: UsageOut
    damaged: str | None = Field(
        default=None,
        description="Set on a row of the store that cannot be read (a value of the wrong kind"
        " in a column, written outside twelvefold): what is wrong, and where to read what to"
        ' do. Such a row has status "damaged" and empty fields; it is listed only without'
        " `status` and `agent`, to callers who may read every served agent.",
    )

    @classmethod
    def of(cls, info: ThreadInfo, usage: Totals) -> "ThreadSummary":
        return cls(
            thread_id=info.id,
            agent=info.agent,
            status=info.status,
            step=info.step,
            events=info.seq,
            request=info.request,
            created_at=info.created_at,
            updated_at=info.updated_at,
            usage=UsageOut.of(usage),
        )

    @classmethod
    def of_damaged(cls, row: DamagedRow) -> "ThreadSummary":
        return cls(
            thread_id=row.id, agent="", status="damaged", step="", events=0, request=None,
            created_at="", updated_at="", usage=UsageOut.of(Totals()),
            damaged=f"{row.problem}: {DAMAGED_ROWS_HELP}",
        )  # fmt: skip


class EventOut(BaseModel):
    """One event of a thread's log, as `twelvefold show --json` writes it, with its
    number (`seq`, from 1)."""

    model_config = ConfigDict(extra="allow")
    seq: int
    kind: str
    step: str


_H16 = "[0-9A-Fa-f]{1,4}"
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_LS32 = f"({_H16}:{_H16}|{_OCTET}(\\.{_OCTET}){{3}})"
IPV6_PATTERN = "|".join(
    [
        f"({_H16}:){{6}}{_LS32}",
        f"::({_H16}:){{5}}{_LS32}",
        f"({_H16})?::({_H16}:){{4}}{_LS32}",
        f"(({_H16}:){{0,1}}{_H16})?::({_H16}:){{3}}{_LS32}",
        f"(({_H16}:){{0,2}}{_H16})?::({_H16}:){{2}}{_LS32}",
        f"(({_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
        f"(({_H16}:){{0,4}}{_H16})?::{_LS32}",
        f"(({_H16}:){{0,5}}{_H16})?::{_H16}",
        f"(({_H16}:){{0,6}}{_H16})?::",
    ]
)
"""An IPv6 address as RFC 3986 writes it (`IPv6address`), without the brackets."""

WEBHOOK_PATTERN = (
    rf"^https?://([A-Za-z0-9.-]+|\[({IPV6_PATTERN})(%25[A-Za-z0-9._~-]+)?\])"
    r"(:[0-9]{1,5})?([/?#][!-~]*)?$"
)
"""An absolute http(s) URL in printable ASCII: its host a name (non-ASCII ones in their
xn-- form), an IPv4 literal or a bracketed IPv6 one (`[::1]`, a zone as `[fe80::1%25eth0]`,
RFC 6874)."""


STRICT = ConfigDict(extra="forbid", strict=True)
"""A request body's fields take no other type's value (`"at": true` is no number, `"1"` no
`1`), as the runtime takes a model's output; unknown fields are refused. Query parameters
are text by nature and keep their conversion (`?wait=true`)."""


class LaunchIn(BaseModel):
    model_config = STRICT
    input: Any = Field(description="The thread's input: a string, or the agent's input type.")
    webhook: str | None = Field(
        None,
        max_length=2000,
        pattern=described_pattern(
            WEBHOOK_PATTERN,
            "webhook must be an absolute http:// or https:// URL in printable ASCII: a host "
            "name (non-ASCII ones in their xn-- form), an IPv4 address or a bracketed IPv6 "
            "one, then an optional :port and path, e.g. https://hooks.example.com/twelvefold",
        ),
        description="An http(s) URL to POST the thread view to (Standard Webhooks, signed) "
        "each time it pauses or ends (docs/server.md, Webhooks).",
    )


class DecisionIn(BaseModel):
    model_config = STRICT
    request: str = Field(min_length=1, max_length=200, description="The pending request.")
    decision: Literal["approve", "reject", "answer"]
    comment: str | None = Field(None, max_length=10_000)
    answer: str | None = Field(None, max_length=100_000)


class SignalIn(BaseModel):
    model_config = STRICT
    type: str = Field(min_length=1, max_length=200, description="The event's declared type.")
    value: Any = Field(description="The event, as a JSON object of that type.")
    request: str | None = Field(
        None, min_length=1, max_length=200, description="The pending request it is for."
    )
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=200, description="A second event with it is dropped."
    )


class RetryIn(BaseModel):
    model_config = STRICT
    reuse_key: bool = Field(False, description="Run the failed tool call with its key.")


class ForkIn(BaseModel):
    model_config = STRICT
    at: int = Field(ge=1, le=1_000_000, description="Keep the first `at` events.")


class CancelIn(BaseModel):
    model_config = STRICT
    reason: str = Field(min_length=1, max_length=10_000)


class Health(BaseModel):
    status: Literal["ok"]


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str
    title: str
    status: int
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {"application/problem+json": {}}}
    for code in (400, 401, 403, 404, 409, 413, 422, 429, 503)
}


def router(service: Service, tokens: TokenStore | None) -> APIRouter:
    """The /v1 routes and /healthz over `service`; `tokens` None: no authentication
    (every caller is `local`)."""
    bearer = HTTPBearer(auto_error=False, description="A token from `twelvefold token create`.")

    def caller(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Caller:
        # A synchronous dependency: FastAPI runs it in a worker thread (a token lookup is
        # a SQLite query).
        if tokens is None:
            return Caller(LOCAL_PERSON, "http")
        if credentials is None:
            raise Unauthorized("send `Authorization: Bearer TOKEN` (twelvefold token create)")
        throttle: Throttle = request.app.state.throttle
        address = request.client.host if request.client else None
        wait = throttle.retry_after(address)
        if wait is not None:  # refused before the token is looked at: no more guessing
            raise TooManyAttempts(wait)
        found = tokens.identify(credentials.credentials)
        if found is None:
            throttle.failed(address)
            raise Unauthorized("this token is not valid (unknown, or revoked)")
        return Caller(found.person, "http", f"token {found.id}")

    Who = Annotated[Caller, Depends(caller)]
    # Every JSON body is read by bodies.loads: a key given twice is a 422.
    api = APIRouter(responses=ERRORS, route_class=StrictJSONRoute)

    @api.get("/healthz", tags=["server"])
    async def healthz() -> Health:
        """Liveness: the process answers."""
        return Health(status="ok")

    @api.post(
        "/v1/agents/{agent}/threads",
        status_code=202,
        responses={200: {"model": ThreadOut, "description": "Paused or ended (`wait`)."}},
        tags=["threads"],
    )
    async def launch(
        who: Who,
        body: LaunchIn,
        response: Response,
        agent: Annotated[str, Path(min_length=1, max_length=200)],
        wait: bool = WAIT,
    ) -> ThreadOut:
        """Launch a thread of `agent`; it runs in the background."""
        if body.webhook is not None:  # checked before anything is launched
            if agent in service.agents and not service.may_read(who, agent):
                # The webhook is sent the thread's view at each pause and at its end.
                raise Forbidden(
                    f"only readers of `{agent}` may name a webhook: it is sent the thread"
                    " each time it pauses and when it ends"
                )
            await replies(service).check_webhook(body.webhook)
        webhook = body.webhook
        if webhook is None:
            view = await service.launch(who, agent, ParsedJson(body.input))
        else:  # recorded before the run can settle
            reply = replies(service)
            view = await service.launch(
                who,
                agent,
                ParsedJson(body.input),
                before_run=lambda thread_id: reply.webhook(thread_id, webhook),
            )
        # A launcher outside `readers` may not see where the thread got to: the answer
        # a launch without `wait` gives (202, the view at launch), never a 404 for a
        # thread that was launched (a client retrying on it would launch it again).
        wait = wait and service.may_read(who, view.agent)
        return await _maybe_waited(service, who, view, wait, response)

    @api.get("/v1/threads", tags=["threads"])
    async def list_threads(
        who: Who,
        status: StatusName | None = None,
        agent: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[ThreadSummary]:
        """The threads the caller may read, most recently updated first; without
        `status` and `agent`, then the store's damaged rows (`damaged`), to a caller who
        may read every served agent."""
        found = await service.threads(who, status=status, agent=agent)
        spent = await service.usage() if found else {}
        listed = [ThreadSummary.of(info, spent.get(info.id, Totals())) for info in found]
        if status is None and agent is None:
            listed += [ThreadSummary.of_damaged(row) for row in await service.damaged(who)]
        return listed

    @api.get("/v1/threads/{thread_id}", tags=["threads"])
    async def view(who: Who, thread_id: ThreadId) -> ThreadOut:
        """Where the thread stands."""
        return ThreadOut.of(await service.view(who, thread_id))

    @api.get("/v1/threads/{thread_id}/events", tags=["threads"])
    async def events(
        who: Who,
        thread_id: ThreadId,
        after: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> list[EventOut]:
        """The thread's event log (after the first `after` events)."""
        agent = service.agents[(await service.view(who, thread_id)).agent]
        found = await service.events(who, thread_id, after=after)
        return [
            # Shown, not stored: secret fields read as "[secret]" (runtime/redact.py).
            EventOut.model_validate({"seq": seq, **agent.codec.encode_event(event, redact=True)})
            for seq, event in enumerate(found, start=after + 1)
        ]

    @api.get(
        "/v1/threads/{thread_id}/stream",
        tags=["threads"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "Events."}},
    )
    async def stream(
        who: Who,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        thread_id: ThreadId,
        request: Request,
        last_event_id: Annotated[str | None, Header(max_length=20)] = None,
        after: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> StreamingResponse:
        """Server-sent events: each event (`id` = its seq, `event` = its kind, `data` =
        its JSON) as it is appended; resumes after `Last-Event-ID` (or `after`); ends,
        with an `end` event carrying the thread view, once the thread pauses or ends.
        Ends early, with an `error` event carrying a problem document, once the caller
        may no longer read the thread (the token revoked, `readers` changed)."""
        if last_event_id is not None:
            if not last_event_id.strip().isdigit():
                raise BadInput("Last-Event-ID is the number of the last event received")
            after = int(last_event_id.strip())
        view = await service.view(who, thread_id)  # 404/403 before the stream opens
        agent = service.agents[view.agent]

        async def token_live() -> None:
            """Unauthorized once the token the stream was opened with is revoked."""
            if tokens is None or credentials is None:  # --insecure-local: no tokens
                return
            if await asyncio.to_thread(tokens.identify, credentials.credentials) is None:
                raise Unauthorized("this token is not valid (unknown, or revoked)")

        async def sent() -> AsyncIterator[str]:
            try:
                async for seq, event in service.follow(
                    who, thread_id, after=after, still_allowed=token_live
                ):
                    encoded = agent.codec.encode_event(event, redact=True)  # secrets hidden
                    data = json.dumps({"seq": seq, **encoded})
                    yield f"id: {seq}\nevent: {encoded['kind']}\ndata: {data}\n\n"
                await token_live()
                final = await service.view(who, thread_id)
            except ServiceError as refused:  # the answer has begun: said as an event
                said = Problem(
                    type="about:blank", title=refused.title, status=refused.status,
                    detail=refused.detail,
                )  # fmt: skip
                yield f"event: error\ndata: {said.model_dump_json()}\n\n"
                return
            yield f"event: end\ndata: {json.dumps(ThreadOut.of(final).model_dump())}\n\n"

        return StreamingResponse(
            sent(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @api.post("/v1/threads/{thread_id}/decisions", tags=["decisions"])
    async def decide(
        who: Who,
        thread_id: ThreadId,
        body: DecisionIn,
        response: Response,
        wait: bool = WAIT,
    ) -> ThreadOut:
        """Approve, reject or answer the pending request. The view is the thread just
        after the decision (it runs on in the background; `wait` waits for it)."""
        view = await service.decide(
            who,
            thread_id,
            request=body.request,
            decision=body.decision,
            comment=body.comment,
            answer=body.answer,
        )
        return await _maybe_waited(service, who, view, wait, response, accepted=200)

    @api.post("/v1/threads/{thread_id}/signals", tags=["decisions"])
    async def signal(
        who: Who,
        thread_id: ThreadId,
        body: SignalIn,
        response: Response,
        wait: bool = WAIT,
    ) -> ThreadOut:
        """Deliver an outside event to a thread that waits for it (a `wait ... for TYPE`
        step). 422 for a type the agent does not declare or a value of the wrong shape,
        409 when the thread does not wait for it now; a repeated `idempotency_key` is
        dropped (the thread as it stands)."""
        view = await service.send(
            who, thread_id, type=body.type, value=ParsedJson(body.value),
            request=body.request, idempotency_key=body.idempotency_key,
        )  # fmt: skip
        return await _maybe_waited(service, who, view, wait, response, accepted=200)

    @api.post("/v1/threads/{thread_id}/retry", tags=["decisions"])
    async def retry(
        who: Who,
        thread_id: ThreadId,
        response: Response,
        body: RetryIn | None = None,
        wait: bool = WAIT,
    ) -> ThreadOut:
        """Try a failed thread again from its failed step (in the background)."""
        reuse = body.reuse_key if body is not None else False
        view = await service.retry(who, thread_id, reuse_key=reuse)
        return await _maybe_waited(service, who, view, wait, response, accepted=200)

    @api.post("/v1/threads/{thread_id}/fork", status_code=201, tags=["decisions"])
    async def fork(who: Who, thread_id: ThreadId, body: ForkIn) -> ThreadOut:
        """A new thread from the first `at` events; it waits or stays failed until
        someone decides or retries it."""
        return ThreadOut.of(await service.fork(who, thread_id, at=body.at))

    @api.post("/v1/threads/{thread_id}/cancel", tags=["decisions"])
    async def cancel(who: Who, thread_id: ThreadId, body: CancelIn) -> ThreadOut:
        """End the thread on purpose; its pending request is withdrawn."""
        return ThreadOut.of(await service.cancel(who, thread_id, reason=body.reason))

    @api.get("/v1/requests", tags=["decisions"])
    async def requests(who: Who) -> list[ThreadOut]:
        """The waiting threads whose request the caller may decide (the inbox as data)."""
        return [ThreadOut.of(view) for view in await service.pending(who)]

    return api


async def _maybe_waited(
    service: Service,
    who: Caller,
    view: ThreadView,
    wait: bool,
    response: Response,
    *,
    accepted: int = 202,
) -> ThreadOut:
    """The view; with `wait`, the view once the thread stops running (200), or as it
    stands when the wait limit passed (`accepted`)."""
    if wait:
        view = await service.wait(who, view.id, service.wait_limit)
        response.status_code = 200 if view.status != "running" else accepted
    return ThreadOut.of(view)
