"""A scripted Slack Web API on loopback, for tests (it stands in for slack.com the way
tests/support/openai_server.py stands in for OpenAI).

The server's real slack_sdk client talks to it (`TWELVEFOLD_SLACK_API_URL=server.api_url`).
Every call is kept in `calls` as `(method, arguments)`; it answers as Slack does: `ok`
with a `ts` for a posted message, `not_authed` / `invalid_auth` without the right bot
token, and `invalid_blocks` for a message or view past Block Kit's limits (so a test
sees what Slack would refuse), `unknown_method` for anything else.

    with ScriptedSlack(token="xoxb-test") as slack:
        ... slack.calls_to("chat.postMessage") ...
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

SECTION_TEXT = 3000
HEADER_TEXT = 150
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
CONTEXT_ELEMENTS = 10
MODAL_TITLE = 24
PRIVATE_METADATA = 3000
MAX_BLOCKS = 50


def block_problems(blocks: Any) -> list[str]:
    """What Slack would refuse in `blocks` (the limits of
    https://api.slack.com/reference/block-kit/blocks this project relies on)."""
    problems: list[str] = []
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        return ["blocks must be a list of at most 50"]
    for block in blocks:
        kind = block.get("type")
        text = block.get("text") or {}
        if kind == "header" and not 0 < len(text.get("text", "")) <= HEADER_TEXT:
            problems.append("header text must be 1..150 characters")
        if kind == "section" and len(text.get("text", "")) > SECTION_TEXT:
            problems.append("section text must be at most 3000 characters")
        if kind == "context":
            elements = block.get("elements", [])
            if len(elements) > CONTEXT_ELEMENTS:
                problems.append("a context holds at most 10 elements")
            for element in elements:
                if len(element.get("text", "")) > SECTION_TEXT:
                    problems.append("context text must be at most 3000 characters")
        if kind == "actions":
            for element in block.get("elements", []):
                if len(element.get("text", {}).get("text", "")) > BUTTON_TEXT:
                    problems.append("button text must be at most 75 characters")
                if len(element.get("value", "")) > BUTTON_VALUE:
                    problems.append("button value must be at most 2000 characters")
    return problems


class ScriptedSlack:
    """The server; use as a context manager (or the `slack_server` fixture)."""

    def __init__(self, token: str = "xoxb-test") -> None:
        self.token = token
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.refuse: dict[str, str] = {}
        """method -> the `error` Slack answers it with (a scripted failure)."""
        self._lock = threading.Lock()
        self._ts = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def api_url(self) -> str:
        assert self._server is not None, "the server is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/api/"

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [arguments for name, arguments in self.calls if name == method]

    def answer(self, method: str, authorization: str, arguments: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.calls.append((method, arguments))
            self._ts += 1
            ts = f"1700000000.{self._ts:06d}"
        if not authorization:
            return {"ok": False, "error": "not_authed"}
        if authorization != f"Bearer {self.token}":
            return {"ok": False, "error": "invalid_auth"}
        if method in self.refuse:
            return {"ok": False, "error": self.refuse[method]}
        if method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
            problems = block_problems(arguments.get("blocks", []))
            if problems:
                return {"ok": False, "error": "invalid_blocks", "errors": problems}
            if not arguments.get("channel"):
                return {"ok": False, "error": "channel_not_found"}
        if method == "chat.postMessage":
            return {"ok": True, "channel": arguments["channel"], "ts": ts, "message": arguments}
        if method == "chat.update":
            return {"ok": True, "channel": arguments["channel"], "ts": arguments.get("ts")}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": ts}
        if method == "views.open":
            view = arguments.get("view", {})
            problems = block_problems(view.get("blocks", []))
            if len(view.get("title", {}).get("text", "")) > MODAL_TITLE:
                problems.append("a modal's title is at most 24 characters")
            if len(view.get("private_metadata", "")) > PRIVATE_METADATA:
                problems.append("private_metadata is at most 3000 characters")
            if not arguments.get("trigger_id"):
                return {"ok": False, "error": "invalid_trigger_id"}
            if problems:
                return {"ok": False, "error": "invalid_arguments", "errors": problems}
            return {"ok": True, "view": {"id": "V0001", **view}}
        return {"ok": False, "error": "unknown_method"}

    def start(self) -> ScriptedSlack:
        slack = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    arguments = json.loads(body or b"{}")
                except ValueError:
                    arguments = {"unreadable": body.decode("utf-8", "replace")}
                method = self.path.removeprefix("/api/")
                data = json.dumps(
                    slack.answer(method, self.headers.get("Authorization", ""), arguments)
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ScriptedSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def slack_server() -> Iterator[ScriptedSlack]:
    with ScriptedSlack() as server:
        yield server
