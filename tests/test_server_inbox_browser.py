"""The inbox in headless Chromium (Debian's `chromium`, driven by playwright) against a real
`twelvefold serve` process on loopback, whose model is the scripted OpenAI-compatible
server: sign in, see a pending approval with its value, approve it with a comment, see the
thread finish; a value holding `<script>` is shown as text and runs nothing.

Screenshots of the inbox (phone and desktop widths) are taken every run into the test's
folder; with TWELVEFOLD_SCREENSHOTS=1 (`make screenshots`) they replace docs/images/.

Chromium missing: the tests skip on a developer's machine and fail in CI (CI=true).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.inbox import HOSTILE, require_part
from tests.support.openai_server import Reply, ScriptedOpenAI
from tests.support.server import deploy_choice, deploy_project
from tests.support.waiting import wait_for

CHROMIUM = Path("/usr/bin/chromium")
DOCS_IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
HOSTILE_INPUT = "deploy the build named in the attachment"
"""The launch input after which the scripted model deploys a tag holding HOSTILE."""

pytestmark = pytest.mark.slow


def responder(body: dict[str, Any]) -> Reply:
    """deploybot's scripted model; a thread launched with HOSTILE_INPUT asks to deploy a
    tag that tries to run script in the inbox."""
    messages = body.get("messages", [])
    context = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    choice = deploy_choice(context)
    if HOSTILE_INPUT in context and choice["type"] == "DeployBackend":
        choice["tag"] = HOSTILE
    return Reply(arguments={"choice": choice})


@dataclass
class Server:
    url: str
    tokens: dict[str, str]

    def launch(self, text: str) -> dict[str, Any]:
        """A thread launched by bob over the API, once it waits for an approval."""
        response = httpx.post(
            f"{self.url}/v1/agents/deploybot/threads?wait=true",
            json={"input": text},
            headers={"Authorization": f"Bearer {self.tokens['bob']}"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        assert view["waiting_for"] == "approval", view
        return view

    def view(self, thread_id: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.url}/v1/threads/{thread_id}",
            headers={"Authorization": f"Bearer {self.tokens['ana']}"},
            timeout=60,
        )
        found: dict[str, Any] = response.json()
        return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def twelvefold(*args: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "twelvefold", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`twelvefold serve` over deploybot on a loopback port, with tokens for ana (a
    release manager) and bob (who launches)."""
    folder = tmp_path_factory.mktemp("inbox-e2e")
    agent = deploy_project(folder / "project")
    db = folder / "threads.db"
    model = ScriptedOpenAI(responder=responder).start()
    env = {
        **os.environ,
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "test",
    }
    tokens = {
        person: twelvefold(
            "token", "create", person, "--db", str(db), "--create", cwd=folder, env=env
        )
        .strip()
        .splitlines()[-1]
        for person in ("ana", "bob")
    }
    try:
        with serving(agent, db, folder, env, "--sweep-seconds", "1") as url:
            yield Server(url, tokens)
    finally:
        model.stop()


@contextmanager
def serving(
    agent: Path, db: Path, folder: Path, env: dict[str, str], *options: str
) -> Iterator[str]:
    """`twelvefold serve AGENT --db DB OPTIONS` on a free loopback port (its output in
    folder/serve.log): its URL once /healthz answers; stopped on the way out."""
    port = free_port()
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "twelvefold", "serve", str(agent), "--db", str(db),
         "--port", str(port), *options],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, (folder / "serve.log").read_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, "twelvefold serve to answer /healthz")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a server that hangs on SIGTERM
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    require_part(
        CHROMIUM.exists(),
        "Chromium (/usr/bin/chromium)",
        "`make system-deps` installs Debian's chromium",
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def watched_page(chromium: Any, viewport: dict[str, int]) -> tuple[Any, list[str]]:
    """A fresh browser context and page; the list collects every dialog the page opened
    and every script error it raised (both must stay empty)."""
    context = chromium.new_context(viewport=viewport)
    page = context.new_page()
    incidents: list[str] = []

    def on_dialog(dialog: Any) -> None:
        incidents.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: incidents.append(f"script error: {error}"))
    return page, incidents


def sign_in(page: Any, server: Server, person: str) -> None:
    page.goto(f"{server.url}/")
    assert page.url.endswith("/signin"), page.url
    page.fill("#token", server.tokens[person])
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url == f"{server.url}/", page.content()


def no_horizontal_scroll(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def screenshot(page: Any, name: str, folder: Path) -> None:
    page.screenshot(path=str(folder / name), full_page=True)
    if os.environ.get("TWELVEFOLD_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / name, DOCS_IMAGES / name)


def test_sign_in_see_the_value_approve_with_a_comment_and_see_the_thread_finish(
    server: Server, chromium: Any, tmp_path: Path
) -> None:
    view = server.launch("deploy the latest build to production")
    page, incidents = watched_page(chromium, PHONE)
    sign_in(page, server, "ana")

    card = page.locator(f"#request-{view['request']}")
    assert card.locator(".ask").inner_text() == "Deploy v1.2.3 to production?"
    value = json.loads(card.locator(".value").inner_text())
    assert value == {"tag": "v1.2.3", "env": "production"}
    assert no_horizontal_scroll(page), "the inbox is wider than a phone's screen"
    screenshot(page, "inbox-phone.png", tmp_path)
    page.set_viewport_size(DESKTOP)
    card.locator("details.context summary").click()
    card.locator("img.graph").scroll_into_view_if_needed()
    wait_for(
        lambda: bool(card.locator("img.graph").evaluate("img => img.naturalWidth > 0")),
        "the graph picture to load",
    )
    screenshot(page, "inbox-desktop.png", tmp_path)

    card.locator("textarea[name=comment]").fill("ship it <b>now</b>")
    card.locator("button.approve").click()
    page.wait_for_url(f"**/threads/{view['thread_id']}?decided=approve")
    assert "Approved." in page.locator("#message").inner_text()
    # The page reloads itself (a meta refresh, no script) while the thread runs.
    page.locator("#status", has_text="finished").wait_for(timeout=90_000)
    output = json.loads(page.locator("#output").inner_text())
    assert output == {"message": "deployed: https://production.deploybot.example/releases/v1.2.3"}
    assert "ship it <b>now</b>" in page.locator(".events").inner_text()
    finished = server.view(view["thread_id"])
    assert finished["status"] == "finished"
    # What it cost, as the API's `usage` says (and `show` prints it).
    usage, shown = finished["usage"], page.locator("#usage").inner_text()
    assert f"{usage['steps']} steps, {usage['model_calls']} model calls, " in shown
    assert f"{usage['input_tokens']:,}→{usage['output_tokens']:,} tokens, $" in shown
    assert no_horizontal_scroll(page)
    assert incidents == []


def test_a_value_holding_script_is_shown_as_text_and_runs_nothing(
    server: Server, chromium: Any
) -> None:
    view = server.launch(HOSTILE_INPUT)
    for url in ("/", f"/threads/{view['thread_id']}"):
        page, incidents = watched_page(chromium, DESKTOP)
        sign_in(page, server, "ana")
        page.goto(f"{server.url}{url}")
        card = page.locator(f"#request-{view['request']}")
        ask = card.locator(".ask").inner_text()
        assert ask.startswith('Deploy <script>window.pwned=1</script>"><img src=x onerror=')
        assert "{{ 7*7 }}{% if true %}x{% endif %}" in ask
        assert "\\u202eevil" in ask  # the right-to-left override is shown, not obeyed
        value = json.loads(card.locator(".value").inner_text())
        assert value["tag"] == HOSTILE
        assert page.evaluate("window.pwned") is None
        assert page.locator("main script, main img[src=x]").count() == 0
        assert incidents == []
