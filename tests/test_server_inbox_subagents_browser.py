"""A sub-agent's request in the inbox, in headless Chromium (Debian's `chromium`, driven by
playwright) against a real `twelvefold serve` process on loopback: the card of a request
that belongs to a child thread names the parent thread (linked) and the parent's request
that waits on it, as text, however the parent's id is spelled.

Chromium missing: the tests skip on a developer's machine and fail in CI (CI=true).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.runtime_helpers import EXAMPLES, ScriptedModel, no_messages
from tests.test_server_inbox_browser import (
    DESKTOP,
    Server,
    chromium,
    serving,
    sign_in,
    twelvefold,
    watched_page,
)
from twelvefold.runtime.api import Runtime, ThreadView
from twelvefold.runtime.store import SqliteStore

__all__ = ["chromium"]  # the fixture, imported for this module's tests
pytestmark = pytest.mark.slow
PARENT_ID = 'p"><img src=x onerror="window.pwned=3">&amp;{{ 7*7 }}\x1b[31m\u202eevil'
"""A parent id someone chose that tries to break out of the page (the Python API lets a
person name a thread). No `/`: no thread page or API route can name such an id."""


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, ThreadView]]:
    """`twelvefold serve` over examples/returns.agent (and its refunds sub-agent), with a
    parent thread named PARENT_ID already waiting for its child, which waits for finance."""
    folder = tmp_path_factory.mktemp("inbox-children")
    project = folder / "project"
    project.mkdir()
    shutil.copy(EXAMPLES / "returns.agent", project / "returns.agent")
    shutil.copytree(EXAMPLES / "returns", project / "returns")
    (project / "twelvefold.toml").write_text('[approvers]\nsupport-leads = ["ana"]\n')
    db = folder / "threads.db"
    with Runtime(
        SqliteStore(db), model=ScriptedModel([]), messages=no_messages, cache_dir=folder / "c"
    ) as rt:
        parent = rt.launch(
            project / "returns.agent",
            {"order_id": "o-1", "email": "ana@example.com", "amount_cents": 1200},
            thread_id=PARENT_ID,
        )
    assert (parent.waiting_for, parent.child) == ("agent", f"{PARENT_ID}~{parent.request}")
    env = {**os.environ, "OPENAI_API_KEY": "test", "OPENAI_BASE_URL": "http://127.0.0.1:9"}
    token = twelvefold("token", "create", "ana", "--db", str(db), cwd=folder, env=env)
    with serving(project / "returns.agent", db, folder, env) as url:
        yield Server(url, {"ana": token.strip().splitlines()[-1]}), parent


def test_a_childs_card_names_its_parent_and_the_request_that_waits_on_it(
    family: tuple[Server, ThreadView], chromium: Any
) -> None:
    server, parent = family
    assert parent.child is not None
    page, incidents = watched_page(chromium, DESKTOP)
    sign_in(page, server, "ana")
    for url in ("/", f"/threads/{quote(parent.child, safe='')}"):
        page.goto(f"{server.url}{url}")
        card = page.locator("article.request")
        assert card.count() == 1, page.content()
        named = card.locator("p.parent")
        # Shown as typed (hidden characters as \uXXXX), never as markup.
        shown = PARENT_ID.replace("\x1b", "\\u001b").replace("\u202e", "\\u202e")
        assert named.locator(".parent-thread").inner_text() == shown
        assert named.locator(".parent-request").inner_text() == parent.request
        assert "returns · thread" in named.inner_text()
        assert "whose step refund waits on it" in " ".join(named.inner_text().split())
        href = named.locator("a.parent-link").get_attribute("href")
        assert href == f"/threads/{quote(PARENT_ID, safe='')}"
        assert page.evaluate("window.pwned") is None
        assert page.locator("main script, main img[src=x]").count() == 0
    page.locator("a.parent-link").first.click()
    page.wait_for_load_state()
    assert page.locator(".thread-id").inner_text() == shown
    assert incidents == []
