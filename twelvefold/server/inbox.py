"""The approval inbox: server-rendered pages at `/` where people decide what waits for them.

    GET  /                          the pending requests the signed-in person may decide
    GET  /threads/{id}              a thread: status, output, its whole history, its graph,
                                    and the decision form while it waits for this person
    GET  /threads/{id}/graph.svg    the agent's graph with the thread's path (`dot`)
    POST /threads/{id}/decide       approve / reject (with a comment) / answer
    GET  /signin, POST /signin      sign in with a token; POST /signout
    GET  /static/inbox.css

Every decision goes through `Service.decide` with the signed-in person as the caller (via
"inbox"), so the inbox has no rules of its own about who may decide what.

What keeps it safe (each has a test in tests/test_server_inbox*.py):

- Sessions (sessions.py): a random id in an `HttpOnly`, `SameSite=Lax` cookie (`Secure`
  when the request came over https, directly or through a proxy uvicorn trusts), only its
  hash stored, a fixed lifetime, ended by signing out or by revoking the token used.
- CSRF: every POST form carries the session's token (the sign-in form: a nonce also held
  in a cookie), compared in constant time, and a request whose `Origin` (else `Referer`)
  names another site is refused (OWASP CSRF cheat sheet: synchronizer token plus
  origin verification).
- Escaping: the templates render in Jinja2's sandbox with autoescape on; every value is
  printed with the characters a person cannot see or that change how text reads
  (runtime/terminal.py's `HIDDEN`) shown as `\\uXXXX` first, so a model cannot make a
  value read differently from what it is.
- Content-Security-Policy on every response: no script at all (the pages need none),
  styles and images from this origin only, no framing. The graph is an SVG holding names
  from the agent and counts from the log; it is served at its own URL and shown with
  `<img>`, where a browser never runs script or loads anything an SVG names (and the SVG
  response has its own `sandbox` policy in case it is opened directly). That is safer than
  pasting it into the page, which would need an SVG sanitizer to be right.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import jinja2
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from twelvefold.runtime.api import ThreadView
from twelvefold.runtime.loop import Agent
from twelvefold.runtime.redact import shown_value
from twelvefold.runtime.templates import sandboxed
from twelvefold.runtime.terminal import visible
from twelvefold.runtime.types import KIND_OF_EVENT, Event
from twelvefold.runtime.usage import usage_text

from .api import LOCAL_PERSON
from .problems import problem
from .service import Caller, Service, ServiceError, TooManyAttempts
from .sessions import Session, SessionStore, same_secret
from .throttle import Throttle
from .tokens import TokenStore

SESSION_COOKIE = "twelvefold_session"
SIGNIN_COOKIE = "twelvefold_signin"
"""The sign-in form's CSRF nonce (a double-submit cookie: there is no session yet)."""
MAX_FORM_BYTES = 64 * 1024
RECENT_EVENTS = 8

GRAPH_SECONDS = 10.0
"""How long `dot` may take to draw a thread's graph for the inbox (the CLI allows
`--dot-timeout`, 60 s by default): a page's image, not a job. Past it, a 503 saying so."""

GRAPHS_AT_ONCE = 2
"""How many `dot` processes the inbox runs at once: a burst of page loads waits its turn
rather than fill the threads every `asyncio.to_thread` call shares."""
"""How many of a thread's last events a card in the inbox shows."""
REFRESH_SECONDS = 2
"""How often a thread page reloads itself while the thread runs (a meta refresh, not
script)."""

PAGE_POLICY = (
    "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
IMAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; sandbox"
SECURITY_HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

DECIDED = {
    "approve": "Approved. The thread runs on.",
    "reject": "Rejected. The thread runs on.",
    "answer": "Answer sent. The thread runs on.",
}
"""The notice after a decision, chosen by a fixed key: nothing from the URL is echoed."""


# ---- what the templates show (computed here; templates only lay it out) ---------------


def pretty(value: Any) -> str:
    """A value as indented JSON, for a person to read in full."""
    return json.dumps(_jsonable(value), indent=2, ensure_ascii=False, default=str)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return shown_value(value)  # secret fields read as "[secret]" (runtime/redact.py)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return value


def _tagged(value: Any) -> Any:
    """An event's field for the history: a typed value says its type (which of its
    outputs the model chose matters as much as the fields, and `ListGitTags {}` has none)."""
    if isinstance(value, BaseModel):
        return {"type": type(value).__name__, "value": _jsonable(value)}
    return _jsonable(value)


@dataclass(frozen=True)
class EventRow:
    seq: int
    kind: str
    step: str
    at: str | None
    detail: str
    """The event's own fields (decision, comment, output, error ...) as JSON; may be ""."""


def event_rows(events: Sequence[Event], first_seq: int = 1) -> list[EventRow]:
    rows = []
    for seq, event in enumerate(events, first_seq):
        payload = {
            f.name: _tagged(getattr(event, f.name))
            for f in dataclasses.fields(event)
            if f.name not in ("step", "at", "usage") and getattr(event, f.name) is not None
        }
        kind = KIND_OF_EVENT.get(type(event), type(event).__name__)
        rows.append(EventRow(seq, kind, event.step, event.at, pretty(payload) if payload else ""))
    return rows


@dataclass(frozen=True)
class ParentLink:
    """The thread whose `agent` step started a child thread, as a card names it."""

    thread: str
    link: str
    agent: str | None
    """None when the visitor may not read the parent (only its id is shown)."""
    step: str | None
    """The parent's step that waits for this child, while it waits for it."""
    request: str | None
    """The parent's request that waits for this child, while it waits for it."""


@dataclass(frozen=True)
class RequestCard:
    """One pending request, as the inbox and the thread page show it."""

    thread: str
    link: str
    agent: str
    step: str
    request: str
    waiting_for: str
    question: str
    value: str
    events: list[EventRow]
    may_decide: bool
    parent: ParentLink | None = None
    """For a sub-agent's thread: the parent thread that waits on it."""
    usage: str | None = None
    """What the thread cost so far, its sub-agents' included (`usage_text`), as the
    thread's page says it; the inbox's list shows it on each card."""
    deadline: str | None = None
    """When the request times out (its `timeout`; ISO 8601, UTC): a decision after it
    is refused and the timeout's outcome recorded instead."""


@dataclass(frozen=True)
class ThreadPage:
    thread: str
    link: str
    agent: str
    status: str
    step: str
    output: str | None
    error: str | None
    events: list[EventRow]
    card: RequestCard | None
    usage: str | None = None
    """What the thread cost so far, its sub-agents' included (`usage_text`)."""
    retry: str | None = None
    """While a failed tool attempt waits out its backoff: when the next try is due and
    why the last one failed (`retry_text`)."""


def retry_text(view: ThreadView) -> str | None:
    """`2026-12-01T06:25:00.000000Z (attempt 1 failed: ConnectionError: ...)`, or None
    when no retry is pending."""
    failed = view.failed_attempt
    if failed is None:
        return None
    return f"{view.retry_at} (attempt {failed.attempt} failed: {failed.error})"


def thread_link(root: str, thread_id: str) -> str:
    return f"{root}/threads/{quote(thread_id, safe='')}"


def parent_link(root: str, child: ThreadView, parent: ThreadView | None) -> ParentLink | None:
    """How a card names `child`'s parent thread: its id and link always, its agent when the
    visitor may read it (`parent`), and the step and request that wait for this child
    while the parent's `agent` step still waits for it."""
    if child.parent is None:
        return None
    waits = parent is not None and parent.child == child.id
    return ParentLink(
        thread=child.parent,
        link=thread_link(root, child.parent),
        agent=parent.agent if parent is not None else None,
        step=parent.step if waits and parent is not None else None,
        request=parent.request if waits and parent is not None else None,
    )


def request_card(
    root: str,
    view: ThreadView,
    events: Sequence[Event],
    *,
    may_decide: bool,
    parent: ThreadView | None = None,
) -> RequestCard | None:
    """The card of `view`'s pending request (None when nothing waits for a person);
    `parent`: its parent thread's view, for a sub-agent's thread the visitor may read."""
    if view.status != "waiting" or view.request is None or view.waiting_for is None:
        return None
    first = max(1, len(events) - RECENT_EVENTS + 1)
    return RequestCard(
        thread=view.id,
        link=thread_link(root, view.id),
        agent=view.agent,
        step=view.step,
        request=view.request,
        waiting_for=view.waiting_for,
        question=view.question or f"{view.step} waits for a {view.waiting_for}",
        value=pretty(view.state.value),
        events=event_rows(events[first - 1 :], first),
        may_decide=may_decide,
        parent=parent_link(root, view, parent),
        usage=usage_text(view.usage),
        deadline=view.wake_at,
    )


# ---- the router --------------------------------------------------------------------


class _SecuredRoute(APIRoute):
    """Adds the security headers to every response of the inbox's routes (a response that
    sets its own policy, like the SVG's, keeps it)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def secured(request: Request) -> Response:
            response = await handler(request)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return secured


@dataclass(frozen=True)
class _Visitor:
    """A signed-in browser."""

    session_id: str
    session: Session

    @property
    def caller(self) -> Caller:
        credential = self.session.credential
        return Caller(
            self.session.person, "inbox", None if credential is None else f"token {credential}"
        )


class _Refused(Exception):
    """A request the inbox answers with a page that says why (status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def router(service: Service, *, sessions: SessionStore | None = None) -> APIRouter:
    """The inbox's routes, to include at the app's root. People sign in with a token of
    the app's `state.tokens` (app.py); without one (`--insecure-local`) the sign-in form
    signs in as `local`. `sessions` defaults to the `inbox_sessions` table of the
    service's store file (in memory for a memory store).

    None of the routes is in the OpenAPI document: they are pages, not the API."""
    sessions = sessions if sessions is not None else SessionStore(service.database)
    pages = _Pages(service, sessions)
    routes = APIRouter(route_class=_SecuredRoute, include_in_schema=False)
    routes.add_api_route("/", pages.inbox, methods=["GET"])
    routes.add_api_route("/signin", pages.signin_form, methods=["GET"])
    routes.add_api_route("/signin", pages.signin, methods=["POST"])
    routes.add_api_route("/signout", pages.signout, methods=["POST"])
    routes.add_api_route("/threads/{thread_id}", pages.thread, methods=["GET"])
    routes.add_api_route("/threads/{thread_id}/graph.svg", pages.graph, methods=["GET"])
    routes.add_api_route("/threads/{thread_id}/decide", pages.decide, methods=["POST"])
    routes.add_api_route("/static/inbox.css", pages.stylesheet, methods=["GET"])
    return routes


class _Pages:
    def __init__(self, service: Service, sessions: SessionStore) -> None:
        self.service = service
        self.sessions = sessions
        self.templates = _environment()
        self.css = resources.files(__package__).joinpath("static/inbox.css").read_bytes()
        self.graphs = _Graphs(service.agents)

    # ---- pages ------------------------------------------------------------------

    async def inbox(self, request: Request) -> Response:
        visitor = await self._visitor(request)
        if visitor is None:
            return self._to_signin(request)
        root = _root(request)
        try:
            views = await self.service.pending(visitor.caller)
        except ServiceError as refused:
            return self._page(request, visitor, "error.html", refused.status, {}, _said(refused))
        cards = []
        for view in views:
            try:
                events = await self.service.events(visitor.caller, view.id)
            except ServiceError:  # gone or unreadable since it was listed: not shown
                continue
            parent = await self._parent(visitor.caller, view)
            card = request_card(root, view, events, may_decide=True, parent=parent)
            if card is not None:
                cards.append(card)
        return self._page(request, visitor, "inbox.html", 200, {"cards": cards}, None)

    async def thread(self, request: Request, thread_id: str) -> Response:
        visitor = await self._visitor(request)
        if visitor is None:
            return self._to_signin(request)
        decided = DECIDED.get(request.query_params.get("decided", ""))
        return await self._thread_page(request, visitor, thread_id, 200, decided, "ok")

    async def decide(self, request: Request, thread_id: str) -> Response:
        try:
            visitor, form = await self._posted(request)
            decision = form.get("decision", "")
            if decision not in DECIDED:
                raise _Refused(422, "Choose approve, reject or answer.")
            pending = form.get("request")
            if not pending:
                raise _Refused(422, "The form names no request; reload the page.")
            await self.service.decide(
                visitor.caller,
                thread_id,
                request=pending,
                decision=decision,  # type: ignore[arg-type]  # checked against DECIDED
                comment=form.get("comment") or None,
                answer=form.get("answer") if decision == "answer" else None,
            )
        except _Refused as refused:
            return await self._refused_decision(request, thread_id, refused)
        except ServiceError as refused:
            return await self._refused_decision(
                request, thread_id, _Refused(refused.status, _said(refused))
            )
        target = f"{thread_link(_root(request), thread_id)}?{urlencode({'decided': decision})}"
        return RedirectResponse(target, status_code=303)

    async def graph(self, request: Request, thread_id: str) -> Response:
        visitor = await self._visitor(request)
        if visitor is None:
            return _plain(401, "sign in to see this graph")
        try:
            view = await self.service.view(visitor.caller, thread_id)
            events = await self.service.events(visitor.caller, thread_id)
        except ServiceError as refused:
            return _plain(refused.status, refused.title)
        try:
            svg = await self.graphs.svg(view.agent, events)
        except GraphTooSlow:
            return _plain(503, f"the graph took more than {GRAPH_SECONDS:g} s to draw")
        if svg is None:
            return _plain(404, "no graph for this agent")
        return Response(
            svg,
            media_type="image/svg+xml",
            headers={"Content-Security-Policy": IMAGE_POLICY, "Cache-Control": "no-store"},
        )

    async def stylesheet(self) -> Response:
        return Response(self.css, media_type="text/css", headers={"Cache-Control": "no-cache"})

    # ---- signing in and out ---------------------------------------------------------

    async def signin_form(self, request: Request) -> Response:
        target = _local_target(request.query_params.get("next"))
        if await self._visitor(request) is not None:
            return RedirectResponse(_root(request) + target, status_code=303)
        message = "You are signed out." if "signed_out" in request.query_params else None
        return self._signin_page(request, 200, target, message)

    async def signin(self, request: Request) -> Response:
        form = await _read_form(request)
        target = _local_target(None if form is None else form.get("next"))
        if form is None:
            return self._signin_page(request, 400, target, "That form could not be read.")
        if not _same_origin(request):
            return self._signin_page(request, 403, target, "Sign in from this site's own page.")
        if not same_secret(form.get("csrf"), request.cookies.get(SIGNIN_COOKIE, "")):
            return self._signin_page(
                request, 403, target, "The sign-in form expired; please try again."
            )
        tokens = _tokens(request)
        if tokens is None:  # --insecure-local: everyone is `local`, as in the API
            person, credential = LOCAL_PERSON, None
        else:
            throttle: Throttle = request.app.state.throttle
            address = request.client.host if request.client else None
            wait = throttle.retry_after(address)
            if wait is not None:  # refused before the token is looked at: no more guessing
                refused = TooManyAttempts(wait)
                return problem(refused.status, refused.detail, headers={"Retry-After": str(wait)})
            found = await asyncio.to_thread(tokens.identify, form.get("token", "").strip())
            if found is None:
                throttle.failed(address)
                return self._signin_page(
                    request, 401, target, "That token is not valid (or it was revoked)."
                )
            person, credential = found.person, found.id
        session_id = await asyncio.to_thread(self.sessions.open, person, credential)
        response = RedirectResponse(_root(request) + target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=int(self.sessions.lifetime),
            path=_cookie_path(request),
            secure=_secure(request),
            httponly=True,
            samesite="lax",
        )
        response.delete_cookie(SIGNIN_COOKIE, path=_cookie_path(request))
        return response

    async def signout(self, request: Request) -> Response:
        try:
            visitor, _form = await self._posted(request)
        except _Refused as refused:
            return self._page(request, None, "error.html", refused.status, {}, refused.message)
        await asyncio.to_thread(self.sessions.close, visitor.session_id)
        response = RedirectResponse(f"{_root(request)}/signin?signed_out=1", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=_cookie_path(request))
        return response

    # ---- helpers ------------------------------------------------------------------------

    async def _visitor(self, request: Request) -> _Visitor | None:
        """The signed-in browser behind `request`, or None. A session whose token has been
        revoked since is ended here."""
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id is None:
            return None
        session = await asyncio.to_thread(self.sessions.find, session_id)
        if session is None:
            return None
        tokens = _tokens(request)
        if tokens is None:
            alive = session.credential is None
        else:
            alive = session.credential is not None and await asyncio.to_thread(
                _token_live, tokens, session.credential
            )
        if not alive:
            await asyncio.to_thread(self.sessions.close, session_id)
            return None
        return _Visitor(session_id, session)

    async def _posted(self, request: Request) -> tuple[_Visitor, Mapping[str, str]]:
        """The visitor and the form of a POST that passed the CSRF checks; `_Refused`
        otherwise."""
        visitor = await self._visitor(request)
        if visitor is None:
            raise _Refused(401, "Your session has ended. Sign in again.")
        if not _same_origin(request):
            raise _Refused(403, "This form was sent from another site; nothing was done.")
        form = await _read_form(request)
        if form is None:
            raise _Refused(400, "That form could not be read; nothing was done.")
        if not same_secret(form.get("csrf"), visitor.session.csrf):
            raise _Refused(403, "This form has expired; reload the page and try again.")
        return visitor, form

    async def _thread_page(
        self,
        request: Request,
        visitor: _Visitor,
        thread_id: str,
        status: int,
        message: str | None,
        kind: str,
    ) -> Response:
        root = _root(request)
        caller = visitor.caller
        try:
            view = await self.service.view(caller, thread_id)
            events = await self.service.events(caller, thread_id)
        except ServiceError as refused:
            return self._page(request, visitor, "error.html", refused.status, {}, _said(refused))
        page = ThreadPage(
            thread=view.id,
            link=thread_link(root, view.id),
            agent=view.agent,
            status=view.status,
            step=view.step,
            output=None if view.output is None else pretty(view.output),
            error=None if view.error is None else f"{view.error.type}: {view.error.message}",
            events=event_rows(events),
            card=request_card(
                root,
                view,
                events,
                may_decide=await self.service.may_decide(caller, view),
                parent=await self._parent(caller, view),
            ),
            usage=usage_text(view.usage),
            retry=retry_text(view),
        )
        refresh = REFRESH_SECONDS if view.status == "running" else None
        context = {"page": page, "refresh": refresh, "message_kind": kind}
        return self._page(request, visitor, "thread.html", status, context, message)

    async def _parent(self, caller: Caller, view: ThreadView) -> ThreadView | None:
        """The view of `view`'s parent thread, when it has one the caller may read."""
        if view.parent is None:
            return None
        try:
            return await self.service.view(caller, view.parent)
        except ServiceError:  # gone, or not the caller's to read: its id is still shown
            return None

    async def _refused_decision(
        self, request: Request, thread_id: str, refused: _Refused
    ) -> Response:
        visitor = await self._visitor(request)
        if visitor is None:
            return self._page(request, None, "error.html", refused.status, {}, refused.message)
        return await self._thread_page(
            request, visitor, thread_id, refused.status, refused.message, "error"
        )

    def _to_signin(self, request: Request) -> Response:
        here = _local_path(request)
        query = "" if here == "/" else "?" + urlencode({"next": here})
        return RedirectResponse(f"{_root(request)}/signin{query}", status_code=303)

    def _signin_page(
        self, request: Request, status: int, target: str, message: str | None
    ) -> Response:
        nonce = request.cookies.get(SIGNIN_COOKIE)
        if nonce is None or not (16 <= len(nonce) <= 64) or not nonce.isascii():
            nonce = secrets.token_urlsafe(24)
        context = {
            "csrf": nonce,
            "next": target,
            "message_kind": "error",
            "local": _tokens(request) is None,
        }
        response = self._page(request, None, "signin.html", status, context, message)
        response.set_cookie(
            SIGNIN_COOKIE,
            nonce,
            max_age=3600,
            path=_cookie_path(request),
            secure=_secure(request),
            httponly=True,
            samesite="strict",
        )
        return response

    def _page(
        self,
        request: Request,
        visitor: _Visitor | None,
        template: str,
        status: int,
        context: Mapping[str, Any],
        message: str | None,
    ) -> HTMLResponse:
        titles = {"inbox.html": "Waiting for you", "signin.html": "Sign in"}
        title = titles.get(template, "Thread" if template == "thread.html" else "Not possible")
        values: dict[str, Any] = {
            "root": _root(request),
            "title": title,
            "person": None if visitor is None else visitor.session.person,
            "csrf": None if visitor is None else visitor.session.csrf,
            "message": message,
            "message_kind": "error",
            "refresh": None,
            **context,
        }
        html = self.templates.get_template(template).render(values)
        return HTMLResponse(html, status_code=status)


# ---- the graph picture ---------------------------------------------------------------


class GraphTooSlow(Exception):
    """`dot` did not draw a thread's graph within GRAPH_SECONDS (it was stopped)."""


class _Graphs:
    """Each served agent's checked program (compiled once, from its `.agent` file), and the
    SVG of a thread's path over it. An agent served from a Python module has no source to
    draw from, so it has no graph (the page says so with the image's alt text)."""

    def __init__(self, agents: Mapping[str, Agent]) -> None:
        self.agents = agents
        self._programs: dict[str, Any] = {}
        self._drawing = asyncio.Semaphore(GRAPHS_AT_ONCE)

    def _program(self, agent: Agent) -> Any:
        if agent.origin not in self._programs:
            from twelvefold.compiler import compile_file

            program = None
            if agent.origin.endswith(".agent") and Path(agent.origin).is_file():
                compiled = compile_file(
                    Path(agent.origin), prompts_dir=agent.prompts_dir, generate_code=False
                )
                program = compiled.program if compiled.ok else None
            self._programs[agent.origin] = program
        return self._programs[agent.origin]

    async def svg(self, agent_name: str, events: Sequence[Event]) -> bytes | None:
        agent = self.agents.get(agent_name)
        if agent is None:
            return None
        async with self._drawing:
            return await asyncio.to_thread(self._draw, agent, events)

    def _draw(self, agent: Agent, events: Sequence[Event]) -> bytes | None:
        from twelvefold.compiler.render import (
            GraphvizFailed,
            GraphvizMissing,
            GraphvizTimedOut,
            graph_view,
            overlay,
            render_image,
            to_dot,
        )

        program = self._program(agent)
        if program is None:
            return None
        trace = overlay(program, events, agent.module)
        try:
            return render_image(to_dot(graph_view(program, trace)), "svg", timeout=GRAPH_SECONDS)
        except (GraphvizMissing, GraphvizFailed):
            return None
        except GraphvizTimedOut:
            raise GraphTooSlow from None


# ---- small pure helpers ------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    """The inbox's templates: in the sandbox like every template twelvefold renders
    (runtime/templates.py), autoescaped, and every printed string made `visible`."""
    env = sandboxed(
        jinja2.PackageLoader("twelvefold.server", "templates"),
        autoescape=True,
        finalize=lambda value: visible(value) if isinstance(value, str) else value,
    )
    return env


def _tokens(request: Request) -> TokenStore | None:
    """The app's token store (app.py keeps it in `state`); None: --insecure-local."""
    return getattr(request.app.state, "tokens", None)


def _token_live(tokens: TokenStore, credential: str) -> bool:
    """Whether the token with id `credential` exists and is not revoked."""
    return any(t.id == credential and not t.revoked for t in tokens.list())


def _said(refused: ServiceError) -> str:
    return f"{refused.title}: {refused.detail}"


def _plain(status: int, text: str) -> Response:
    return Response(text + "\n", status_code=status, media_type="text/plain")


def _root(request: Request) -> str:
    """Where the app is mounted (uvicorn's --root-path behind a proxy), without a slash."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _cookie_path(request: Request) -> str:
    return _root(request) or "/"


def _secure(request: Request) -> bool:
    """Whether the browser reached us over https: directly, or through a proxy that ends
    TLS and says so with `X-Forwarded-Proto: https`. Believing that header can only make
    the cookie stricter (a `Secure` cookie is never sent over plain http)."""
    return "https" in _schemes(request)


def _schemes(request: Request) -> set[str]:
    """The scheme of this request, and the one a proxy in front says the browser used."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return {request.url.scheme} | ({forwarded} if forwarded in ("http", "https") else set())


def _same_origin(request: Request) -> bool:
    """False when the browser says the request came from a page of another origin.

    Browsers send `Origin` on every cross-site POST; a request without it is checked by
    its `Referer`, and one without either (a client that sends neither) is left to the
    CSRF token alone. A page cannot make a browser send `X-Forwarded-Proto` with a form,
    so taking the proxy's word for the scheme opens nothing."""
    own = {f"{scheme}://{request.url.netloc}".lower() for scheme in _schemes(request)}
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.lower() in own
    referer = request.headers.get("referer")
    if referer is not None:
        try:
            parts = urlsplit(referer)
        except ValueError:
            return False
        return f"{parts.scheme}://{parts.netloc}".lower() in own
    return True


async def _read_form(request: Request) -> dict[str, str] | None:
    """A urlencoded form (what a browser's `<form method=post>` sends) as a dict, or None
    when it is not one: another content type, over MAX_FORM_BYTES, not UTF-8, or a field
    given twice. Parsed with the standard library, so nothing else is needed."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=16,
            errors="strict",
        )
    except ValueError:  # UnicodeDecodeError included
        return None
    form = dict(pairs)
    return form if len(form) == len(pairs) else None


def _local_path(request: Request) -> str:
    """The path and query of `request` inside the app (without the mount point)."""
    root, path = _root(request), request.url.path
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path + (f"?{request.url.query}" if request.url.query else "")


def _local_target(target: str | None) -> str:
    """Where to go after signing in: a path of this site, never another site (an open
    redirect would let a link to our sign-in page send people anywhere)."""
    if not target or len(target) > 2000 or not target.startswith("/"):
        return "/"
    if target.startswith("//") or "\\" in target or not target.isprintable():
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"
