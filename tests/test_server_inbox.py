"""The approval inbox through httpx against the app (in process), with the real service,
SQLite, tokens, `dot`, and the real openai client against the scripted model server:
signing in and out, sessions, CSRF, who sees and decides what, escaping, and the headers
every page carries (twelvefold/server/inbox.py)."""

from __future__ import annotations

import hashlib
import html
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.support.inbox import (
    HOSTILE,
    hidden_fields,
    inbox_client,
    require_part,
    sign_in,
    signed_in,
)
from tests.support.openai_server import Reply, ScriptedOpenAI
from tests.support.server import Served, deploy_choice, served
from twelvefold.runtime.store import StoreError
from twelvefold.server.inbox import SESSION_COOKIE, SIGNIN_COOKIE, _local_target, visible
from twelvefold.server.service import Caller
from twelvefold.server.sessions import SessionStore, csrf_token

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("collected")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def s(deploy_agent: Path, tmp_path: Path, openai_server: ScriptedOpenAI) -> Any:
    """deploybot served (the real service and app) on tmp_path/threads.db."""
    async with served(deploy_agent, tmp_path / "threads.db", openai_server) as running:
        yield running


async def waiting_thread(s: Served, person: str = "bob") -> Any:
    """A deploybot thread launched by `person`, waiting for a release manager."""
    launched = await s.service.launch(Caller(person, "http"), "deploybot", "deploy to prod")
    view = await s.service.wait(Caller(person, "http"), launched.id, 60)
    assert (view.status, view.waiting_for) == ("waiting", "approval"), view
    return view


def hostile_responder(body: dict[str, Any]) -> Reply:
    """deploybot's model, except that it deploys a tag holding HOSTILE."""
    messages = body.get("messages", [])
    context = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    choice = deploy_choice(context)
    if choice["type"] == "DeployBackend":
        choice["tag"] = HOSTILE
    return Reply(arguments={"choice": choice})


def decide_form(page: str, decision: str, **extra: str) -> dict[str, str]:
    """The fields a browser sends when the person presses `decision` on `page`'s first
    decision form."""
    form = re.search(r'<form class="decide".*?</form>', page, re.S)
    assert form, f"no decision form on the page:\n{page}"
    return {**hidden_fields(form.group()), "decision": decision, **extra}


def assert_policy(response: Any) -> None:
    """No script may run (`script-src 'none'`, or nothing at all: `default-src 'none'`), the
    page may not be framed, and the browser may not guess another content type."""
    policy = response.headers.get("content-security-policy", "")
    no_script = "script-src 'none'" in policy or (
        policy.startswith("default-src 'none'") and "script-src" not in policy
    )
    assert no_script and "frame-ancestors 'none'" in policy, (response.request.url, policy)
    assert policy.startswith(("default-src 'self'", "default-src 'none'"))
    assert response.headers.get("x-content-type-options") == "nosniff"
    assert response.headers.get("referrer-policy") == "same-origin"


async def recorded(s: Served, thread_id: str) -> list[str]:
    """The kinds of the thread's events, as stored."""
    events = await s.service.events(Caller("ana", "http"), thread_id)
    return [type(e).__name__ for e in events]


# ---- signing in and out ----------------------------------------------------------------


async def test_sign_in_shows_the_pending_approval_with_its_value(s: Served) -> None:
    view = await waiting_thread(s)
    async with inbox_client(s.app) as browser:
        assert (await browser.get("/")).headers["location"] == "/signin"
        signed = await sign_in(browser, s.token("ana"))
        assert (signed.status_code, signed.headers["location"]) == (303, "/")
        page = await browser.get("/")
    assert page.status_code == 200
    assert "Deploy v1.2.3 to production?" in page.text
    assert "&#34;tag&#34;: &#34;v1.2.3&#34;" in page.text  # the value, in full JSON
    assert f'value="{view.request}"' in page.text
    assert "model_output" in page.text  # recent events
    assert f"/threads/{view.id}/graph.svg" in page.text


async def test_the_session_cookie_is_httponly_samesite_and_secure_over_https(
    s: Served, tmp_path: Path
) -> None:
    async with inbox_client(s.app) as browser:
        cookie = (await sign_in(browser, s.token("ana"))).headers["set-cookie"].lower()
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie
    async with inbox_client(s.app, "https://inbox.example") as browser:
        cookie = (await sign_in(browser, s.token("ana"))).headers["set-cookie"].lower()
    assert "secure" in cookie
    async with inbox_client(s.app) as browser:  # a proxy that ends TLS says so
        browser.headers["X-Forwarded-Proto"] = "https"
        fields = hidden_fields((await browser.get("/signin")).text)
        signed = await browser.post(
            "/signin",
            data={**fields, "token": s.token("ana")},
            headers={"Cookie": f"{SIGNIN_COOKIE}={fields['csrf']}"},
        )
    assert signed.status_code == 303 and "secure" in signed.headers["set-cookie"].lower()
    # Only the session id's hash is stored.
    session_id = signed.cookies[SESSION_COOKIE]
    with sqlite3.connect(tmp_path / "threads.db") as db:
        stored = [row[0] for row in db.execute("SELECT id_hash FROM inbox_sessions")]
    assert len(stored) == 3 and session_id not in stored
    assert hashlib.sha256(session_id.encode()).hexdigest() in stored


async def test_a_wrong_token_is_refused_with_a_message(s: Served) -> None:
    real = s.token("ana")
    async with inbox_client(s.app) as browser:
        for wrong in ("", "tf_nothing", real[:-1] + ("A" if real[-1] != "A" else "B")):
            refused = await sign_in(browser, wrong)
            assert refused.status_code == 401
            assert "That token is not valid" in refused.text
            assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")
        assert (await browser.get("/")).status_code == 303


async def test_sign_in_refuses_a_form_without_its_nonce_or_from_another_site(s: Served) -> None:
    async with inbox_client(s.app) as browser:  # no GET of the form: no nonce cookie
        forged = await browser.post("/signin", data={"token": s.token("ana"), "csrf": "x"})
        assert forged.status_code == 403 and SESSION_COOKIE not in str(forged.cookies)
    async with inbox_client(s.app) as browser:
        fields = hidden_fields((await browser.get("/signin")).text)
        forged = await browser.post(
            "/signin",
            data={**fields, "token": s.token("ana")},
            headers={"Origin": "https://evil.example"},
        )
        assert forged.status_code == 403
        assert (await browser.get("/")).status_code == 303  # still signed out


async def test_signing_out_ends_the_session_and_needs_the_csrf_token(s: Served) -> None:
    async with signed_in(s, "ana") as browser:
        csrf = hidden_fields((await browser.get("/")).text)["csrf"]
        session_id = browser.cookies[SESSION_COOKIE]
        refused = await browser.post("/signout", data={"csrf": "0" * 64})
        assert refused.status_code == 403
        assert (await browser.get("/")).status_code == 200  # still signed in
        out = await browser.post("/signout", data={"csrf": csrf})
        assert (out.status_code, out.headers["location"]) == (303, "/signin?signed_out=1")
        assert (await browser.get("/")).status_code == 303
    async with inbox_client(s.app) as replay:  # the old cookie is worth nothing now
        replay.cookies.set(SESSION_COOKIE, session_id)
        assert (await replay.get("/")).status_code == 303


async def test_an_expired_session_or_a_revoked_token_signs_the_person_out(
    s: Served, tmp_path: Path
) -> None:
    async with signed_in(s, "ana") as browser:
        assert (await browser.get("/")).status_code == 200
        with sqlite3.connect(tmp_path / "threads.db") as db:
            db.execute("UPDATE inbox_sessions SET expires = expires - 13 * 3600")
        assert (await browser.get("/")).headers["location"] == "/signin"
    async with signed_in(s, "carol") as browser:
        assert (await browser.get("/")).status_code == 200
        found = s.tokens.identify(s.token("carol"))
        assert found is not None and s.tokens.revoke(found.id)
        assert (await browser.get("/")).headers["location"] == "/signin"


def test_sessions_expire_after_their_lifetime(tmp_path: Path) -> None:
    now = [1000.0]
    store = SessionStore(tmp_path / "s.db", lifetime=60, clock=lambda: now[0])
    session_id = store.open("ana", "1a2b3c4d")
    found = store.find(session_id)
    assert found is not None and (found.person, found.credential) == ("ana", "1a2b3c4d")
    assert found.csrf == csrf_token(session_id) != csrf_token(store.open("ana"))
    now[0] += 59.9
    assert store.find(session_id) is not None
    now[0] += 0.1
    assert store.find(session_id) is None
    now[0] -= 30  # gone for good: the expired row was deleted
    assert store.find(session_id) is None
    assert store.find("") is None and store.find("x" * 1000) is None


def test_a_file_that_is_no_database_is_a_store_error(tmp_path: Path) -> None:
    damaged = tmp_path / "threads.db"
    damaged.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match="is not a store SQLite can open"):
        SessionStore(damaged)


async def test_a_link_to_a_page_comes_back_to_it_after_signing_in_and_never_elsewhere(
    s: Served,
) -> None:
    view = await waiting_thread(s)
    async with inbox_client(s.app) as browser:
        sent = await browser.get(f"/threads/{view.id}")
        assert sent.headers["location"] == f"/signin?next=%2Fthreads%2F{view.id}"
        signed = await sign_in(browser, s.token("ana"), next_page=f"/threads/{view.id}")
        assert signed.headers["location"] == f"/threads/{view.id}"
    for elsewhere in ("//evil.example/x", "https://evil.example", "/\\evil.example", "x", ""):
        assert _local_target(elsewhere) == "/"
    assert _local_target("/threads/t-1?decided=approve") == "/threads/t-1?decided=approve"


# ---- deciding ---------------------------------------------------------------------------


async def test_approve_with_a_comment_then_see_the_thread_finish(s: Served) -> None:
    view = await waiting_thread(s)
    async with signed_in(s, "ana") as browser:
        page = (await browser.get("/")).text
        done = await browser.post(
            f"/threads/{view.id}/decide", data=decide_form(page, "approve", comment="ship it")
        )
        assert done.status_code == 303, done.text
        assert done.headers["location"] == f"/threads/{view.id}?decided=approve"
        finished = await s.service.wait(Caller("ana", "http"), view.id, 60)
        assert finished.status == "finished"
        history = await browser.get(done.headers["location"])
    assert "Approved. The thread runs on." in history.text
    assert 'id="status">finished<' in history.text
    assert "deployed: https://production.deploybot.example/releases/v1.2.3" in history.text
    assert "&#34;comment&#34;: &#34;ship it&#34;" in history.text
    events = await s.service.events(Caller("ana", "http"), view.id)
    (approved,) = [e for e in events if type(e).__name__ == "Approved"]
    found = s.tokens.identify(s.token("ana"))
    assert found is not None
    assert (approved.by, approved.comment, approved.via) == (  # type: ignore[attr-defined]
        "ana",
        "ship it",
        f"inbox (token {found.id})",
    )
    assert (await browser_page_empty(s, "ana")) is True


async def browser_page_empty(s: Served, person: str) -> bool:
    async with signed_in(s, person) as browser:
        return "Nothing is waiting for your decision." in (await browser.get("/")).text


async def test_reject_with_a_comment_and_answer_a_question(
    s: Served, openai_server: ScriptedOpenAI
) -> None:
    def responder(body: dict[str, Any]) -> Reply:
        messages = body.get("messages", [])
        context = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
        if "not on a friday" not in context:
            return Reply(arguments={"choice": deploy_choice(context)})
        if "<answer" not in context and "next week" not in context:
            return Reply(
                arguments={"choice": {"type": "RequestMoreInformation", "question": "When?"}}
            )
        return Reply(arguments={"choice": {"type": "DoneForNow", "message": "later then"}})

    openai_server.responder = responder
    view = await waiting_thread(s)
    async with signed_in(s, "carol") as browser:
        page = (await browser.get("/")).text
        rejected = await browser.post(
            f"/threads/{view.id}/decide",
            data=decide_form(page, "reject", comment="not on a friday"),
        )
        assert rejected.status_code == 303, rejected.text
        question = await s.service.wait(Caller("carol", "http"), view.id, 60)
        assert (question.status, question.waiting_for) == ("waiting", "answer")
        page = (await browser.get("/")).text
        assert "When?" in page and 'name="answer"' in page
        answered = await browser.post(
            f"/threads/{view.id}/decide", data=decide_form(page, "answer", answer="next week")
        )
        assert answered.status_code == 303, answered.text
        finished = await s.service.wait(Caller("carol", "http"), view.id, 60)
    assert finished.status == "finished" and finished.output.message == "later then"
    kinds = await recorded(s, view.id)
    assert "Rejected" in kinds and "Answered" in kinds


async def test_a_person_who_may_not_decide_neither_sees_nor_decides_the_request(s: Served) -> None:
    view = await waiting_thread(s, person="bob")
    async with signed_in(s, "ana") as ana:
        form = decide_form((await ana.get("/")).text, "approve")
    for person in ("dave", "bob"):  # not a release manager; launched it (four eyes)
        async with signed_in(s, person) as browser:
            inbox = await browser.get("/")
            assert "Nothing is waiting for your decision." in inbox.text
            assert view.request not in inbox.text
            thread = await browser.get(f"/threads/{view.id}")
            assert "You may not decide this request." in thread.text
            assert '<form class="decide"' not in thread.text
            csrf = hidden_fields(inbox.text)["csrf"]
            refused = await browser.post(f"/threads/{view.id}/decide", data={**form, "csrf": csrf})
            assert refused.status_code == 403, refused.text
            assert "Forbidden: " in refused.text and "Traceback" not in refused.text
    still = await s.service.view(Caller("ana", "http"), view.id)
    assert (still.status, still.request) == ("waiting", view.request)
    assert "Approved" not in await recorded(s, view.id)


async def test_a_decision_without_the_right_csrf_token_or_from_another_site_is_refused(
    s: Served,
) -> None:
    view = await waiting_thread(s)
    async with signed_in(s, "ana") as other:  # ana's other session: another token
        others = hidden_fields((await other.get("/")).text)["csrf"]
    async with signed_in(s, "ana") as browser:
        form = decide_form((await browser.get("/")).text, "approve", comment="x")
        url = f"/threads/{view.id}/decide"
        attempts = [
            ({k: v for k, v in form.items() if k != "csrf"}, {}),
            ({**form, "csrf": "0" * 64}, {}),
            ({**form, "csrf": others}, {}),
            ({**form, "csrf": form["csrf"].upper()}, {}),
            (form, {"Origin": "https://evil.example"}),
            (form, {"Origin": "null"}),
            (form, {"Referer": "https://evil.example/page"}),
        ]
        for data, headers in attempts:
            refused = await browser.post(url, data=data, headers=headers)
            assert refused.status_code == 403, (data, headers, refused.text)
            assert "nothing was done" in refused.text or "expired" in refused.text
        assert "Approved" not in await recorded(s, view.id)
        same_site = await browser.post(url, data=form, headers={"Origin": "http://testserver"})
        assert same_site.status_code == 303, same_site.text


async def test_a_stale_request_and_bad_forms_are_readable_messages(s: Served) -> None:
    view = await waiting_thread(s)
    async with signed_in(s, "ana") as browser:
        form = decide_form((await browser.get("/")).text, "approve")
        url = f"/threads/{view.id}/decide"
        assert (await browser.post(url, data=form)).status_code == 303
        stale = await browser.post(url, data=form)
        assert stale.status_code == 409
        assert "Request not pending" in stale.text
        urlencoded = {"Content-Type": "application/x-www-form-urlencoded"}
        bad: list[tuple[str, dict[str, Any], int]] = [
            (url, {"json": form}, 400),  # not a form's content type
            (url, {"data": {**form, "decision": "maybe"}}, 422),
            (url, {"data": {**form, "request": ""}}, 422),
            (url, {"content": f"csrf={form['csrf']}&csrf=x", "headers": urlencoded}, 400),
            (url, {"content": b"csrf=\xff", "headers": urlencoded}, 400),
            (url, {"data": {**form, "comment": "x" * 70_000}}, 400),
            ("/threads/no-such-thread/decide", {"data": form}, 404),
        ]
        for target, body, status in bad:
            answer = await browser.post(target, **body)
            assert answer.status_code == status, (body, answer.text)
            assert "text/html" in answer.headers["content-type"]
            assert "Traceback" not in answer.text and 'role="alert"' in answer.text
        missing = await browser.get("/threads/no-such-thread")
        assert missing.status_code == 404 and "Not found" in missing.text


async def test_the_list_shows_what_each_waiting_thread_cost_so_far(s: Served) -> None:
    """Each card of the list says what its thread cost (steps, model calls, tokens, USD),
    as the thread's own page does: the figures are the thread's totals."""
    view = await waiting_thread(s)
    totals = view.usage
    assert totals.model_calls and totals.input_tokens  # the scripted model reports tokens
    async with signed_in(s, "ana") as browser:
        page = (await browser.get("/")).text
    card = re.search(rf'<article class="card request" id="request-{view.request}">.*?</article>',
                     page, re.S)  # fmt: skip
    assert card, page
    shown = re.search(r'<span class="usage">([^<]*)</span>', card.group())
    assert shown, card.group()
    text = html.unescape(shown.group(1))
    assert text.startswith(f"{totals.steps} steps, {totals.model_calls} model call")
    assert f"{totals.input_tokens:,}→{totals.output_tokens:,} tokens, " in text
    assert f"tokens, {totals.cost_text}" in text, text


# ---- escaping and headers -------------------------------------------------------------


async def test_values_from_the_model_are_shown_as_text(
    s: Served, openai_server: ScriptedOpenAI
) -> None:
    openai_server.responder = hostile_responder
    view = await waiting_thread(s)
    async with signed_in(s, "ana") as browser:
        pages = [(await browser.get("/")).text, (await browser.get(f"/threads/{view.id}")).text]
    for page in pages:
        assert "<script>window" not in page and "<img src=x" not in page
        assert 'onerror="window' not in page
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page
        assert "{{ 7*7 }}{% if true %}x{% endif %}" in page  # printed, never evaluated
        assert "\u202e" not in page and "\x1b" not in page
        assert "\\u202eevil" in page and "\\u001b[31m" in page
        # the ask ("Deploy {{ tag }} ...") and the value both carry it, escaped
        assert page.count("&lt;script&gt;window.pwned=1") >= 2


def test_visible_writes_hidden_characters_out() -> None:
    assert visible("a\u202eb\u200bc\x00d\x7fe\tf\ng") == "a\\u202eb\\u200bc\\u0000d\\u007fe\tf\ng"
    assert visible("plain ünïcode ✓") == "plain ünïcode ✓"


async def test_every_response_carries_the_security_headers(s: Served) -> None:
    view = await waiting_thread(s)
    async with inbox_client(s.app) as browser:
        responses = [await browser.get("/"), await browser.get("/signin")]
        responses.append(await sign_in(browser, "wrong"))
        responses.append(await sign_in(browser, s.token("ana")))
        responses += [
            await browser.get("/"),
            await browser.get(f"/threads/{view.id}"),
            await browser.get("/threads/nope"),
            await browser.get("/static/inbox.css"),
            await browser.post(f"/threads/{view.id}/decide", data={"csrf": "x"}),
        ]
        graph = await browser.get(f"/threads/{view.id}/graph.svg")
    for response in [*responses, graph]:
        assert_policy(response)
    page = responses[4]
    assert page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text and " style=" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


async def test_the_graph_is_an_svg_with_the_threads_path_and_its_own_sandbox(s: Served) -> None:
    require_part(shutil.which("dot") is not None, "Graphviz's `dot`", "`make system-deps`")
    view = await waiting_thread(s)
    async with inbox_client(s.app) as browser:
        assert (await browser.get(f"/threads/{view.id}/graph.svg")).status_code == 401
        await sign_in(browser, s.token("dave"))
        graph = await browser.get(f"/threads/{view.id}/graph.svg")
        missing = await browser.get("/threads/nope/graph.svg")
    assert graph.status_code == 200
    assert graph.headers["content-type"] == "image/svg+xml"
    policy = graph.headers["content-security-policy"]
    assert policy.startswith("default-src 'none'") and policy.endswith("sandbox")
    svg = graph.text
    assert "<svg" in svg and "approve_deploy" in svg
    assert "<script" not in svg and "onload" not in svg
    # the overlay: where the thread went and where it waits now
    assert "visited ×1" in html.unescape(svg)
    assert re.search(r'<g id="node\d+" class="node approval visited here waiting"', svg), svg
    assert missing.status_code == 404


async def test_a_graph_dot_cannot_draw_in_time_is_a_503_saying_so(
    s: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review found the inbox gave `dot` a minute per image (the CLI's default) and
    answered a 500 past it; a page's image now has ten seconds, then a 503 in words."""
    require_part(shutil.which("dot") is not None, "Graphviz's `dot`", "`make system-deps`")
    from twelvefold.server import inbox

    monkeypatch.setattr(inbox, "GRAPH_SECONDS", 0.001)  # the real `dot`, too little time
    view = await waiting_thread(s)
    async with inbox_client(s.app) as browser:
        await sign_in(browser, s.token("dave"))
        graph = await browser.get(f"/threads/{view.id}/graph.svg")
    assert graph.status_code == 503, graph.text
    assert graph.text == "the graph took more than 0.001 s to draw\n"


async def test_a_request_with_a_timeout_shows_its_deadline_and_a_late_decision_is_refused(
    tmp_path: Path, openai_server: ScriptedOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from tests.support.server import deploy_project
    from twelvefold.runtime import api, timeouts

    agent = deploy_project(tmp_path / "p")
    agent.write_text(
        agent.read_text().replace(
            '  approvers "release-managers"\n', '  approvers "release-managers"\n  timeout 1h\n'
        )
    )
    async with served(agent, tmp_path / "threads.db", openai_server) as s:
        view = await waiting_thread(s)
        assert view.wake_at is not None
        async with signed_in(s, "ana") as browser:
            page = (await browser.get("/")).text
            assert f'<time datetime="{view.wake_at}">' in page
            thread_page = (await browser.get(f"/threads/{view.id}")).text
            assert f'<time datetime="{view.wake_at}">' in thread_page
            form = decide_form(page, "approve")
            late = timeouts.iso(timeouts.as_moment(view.wake_at) + timedelta(seconds=1))
            monkeypatch.setattr(api, "_now", lambda: late)
            refused = await browser.post(f"/threads/{view.id}/decide", data=form)
        assert refused.status_code == 409 and "Request timed out" in refused.text
        assert "Approved" not in await recorded(s, view.id)
        assert "Rejected" in await recorded(s, view.id)
