"""A scripted OpenAI-compatible chat-completions server on loopback, for tests.

Tests talk to it through the real openai + instructor client. Replies are scripted in
advance (`reply_tool`, `reply_json`, `reply_error`) and served in order; when the script is
empty, `responder` (a function of the request body) answers, else the server answers 500 and
says the script ran out. Every request body is kept in `requests`, so a test can assert what
the model was sent: messages, tools, the validation error fed back on a retry.

    with ScriptedOpenAI() as server:
        server.reply_tool({"choice": {"type": "Add", "a": 1, "b": 2}})
        model = OpenAIModel(base_url=server.base_url, api_key="test")
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a tool call, JSON (or any) content, or an HTTP error."""

    arguments: Any = None
    """Tool-call arguments (a dict is JSON-encoded; a string is sent as is, even if broken)."""
    content: str | None = None
    tool_name: str | None = None
    """Defaults to the function the request forces with `tool_choice`."""
    status: int = 200
    error: str | None = None
    usage: tuple[int, int] | dict[str, Any] | None = (11, 7)
    """(prompt_tokens, completion_tokens), with their total; or the `usage` object to send
    as it is (a dict), or None to send none."""
    finish_reason: str | None = None
    """Overrides the natural one (`tool_calls` or `stop`): `length` is a reply cut off at the
    token limit."""
    calls: int = 1
    """How many tool calls the message carries (each with `arguments`): a model that
    ignores `parallel_tool_calls: false`."""
    retry_after: str | None = None
    """A `Retry-After` header for an error reply (a 429 that asks the client to wait)."""
    padding: int = 0
    """Spaces sent before the JSON body (a reply of that many bytes more)."""
    gzip: bool = False
    """Send the body gzip-compressed (`Content-Encoding: gzip`)."""
    drip: float = 0.0
    """When > 0: declare a 100,000-byte body and send one space every `drip` seconds,
    until the client hangs up (an endpoint that never finishes its reply)."""


Responder = Callable[[dict[str, Any]], Reply]


class _Server(ThreadingHTTPServer):
    request_queue_size = 256
    """The listen backlog (socketserver's default is 5): a client opening many
    connections at once would otherwise see some refused and retried a second later."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the crash tests and the crash bench kill workers
        # with SIGKILL) resets its connection: expected here, not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class ScriptedOpenAI:
    """The server; use as a context manager (or the `openai_server` fixture)."""

    script: deque[Reply] = field(default_factory=deque)
    responder: Responder | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    wire: list[tuple[str, list[tuple[str, str]], bytes]] = field(default_factory=list)
    """Each request as it came in: its path, its headers in order, its body's bytes (tests
    that what a client sends is byte for byte another's)."""
    arrivals: list[float] = field(default_factory=list)
    """`time.monotonic()` when each of `requests` arrived (rate-limit tests count them
    per window)."""
    latency: float = 0.0
    """Seconds each completion takes before it is answered (a model that thinks; the
    load benchmark uses 0.05). Each request waits in its own server thread, so
    concurrent requests wait side by side, as they would at a real API."""
    in_flight: int = 0
    """Completions being answered right now."""
    most_in_flight: int = 0
    """The most completions that were being answered at once (tests of a client-side
    cap on calls in flight count them here)."""
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- scripting --------------------------------------------------------------------

    def reply_tool(
        self,
        arguments: Any,
        *,
        name: str | None = None,
        usage: tuple[int, int] = (11, 7),
        finish_reason: str | None = None,
    ) -> None:
        self.script.append(
            Reply(arguments=arguments, tool_name=name, usage=usage, finish_reason=finish_reason)
        )

    def reply_json(
        self, content: Any, *, usage: tuple[int, int] = (11, 7), finish_reason: str | None = None
    ) -> None:
        text = content if isinstance(content, str) else json.dumps(content)
        self.script.append(Reply(content=text, usage=usage, finish_reason=finish_reason))

    def reply_error(self, status: int, message: str) -> None:
        self.script.append(Reply(status=status, error=message))

    # ---- serving ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the server is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> ScriptedOpenAI:
        server = _Server(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        threading.Thread(
            target=server.serve_forever, args=(0.05,), name="scripted-openai", daemon=True
        ).start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ScriptedOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self.answer_with_headers(body)[:2]

    def answer_with_headers(
        self, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, Any]]:
        with self._lock:
            self.requests.append(body)
            self.arrivals.append(time.monotonic())
            reply = self.script.popleft() if self.script else None
        if reply is None and self.responder is not None:
            reply = self.responder(body)
        if reply is None:
            return 500, _error_body("the scripted server has no reply left for this request"), {}
        if reply.status != 200:
            headers = {"Retry-After": reply.retry_after} if reply.retry_after else {}
            return reply.status, _error_body(reply.error or "scripted error"), headers
        shaped: dict[str, Any] = {}
        if reply.padding or reply.gzip or reply.drip:
            shaped[_SHAPE] = (reply.padding, reply.gzip, reply.drip)
        return 200, completion(body, reply, n=len(self.requests)), shaped


def completion(request: dict[str, Any], reply: Reply, n: int) -> dict[str, Any]:
    """A chat.completion object as the OpenAI API returns it."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    finish_reason = "stop"
    if reply.arguments is not None:
        arguments = reply.arguments
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        forced = request.get("tool_choice")
        name = reply.tool_name or (
            forced["function"]["name"] if isinstance(forced, dict) else "unknown"
        )
        message["tool_calls"] = [
            {
                "id": f"call_{n}_{index}",
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for index in range(reply.calls)
        ]
        finish_reason = "tool_calls"
    finish_reason = reply.finish_reason or finish_reason
    usage = reply.usage
    if isinstance(usage, tuple):
        prompt_tokens, completion_tokens = usage
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": 1_700_000_000 + n,
        "model": request.get("model", "scripted"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        **({} if usage is None else {"usage": usage}),
    }


_SHAPE = "x-scripted-shape"
"""A key of the headers `answer_with_headers` returns that is no header: how the handler
sends the body (`Reply.padding`, `gzip`, `drip`)."""


def _error_body(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "scripted_error", "code": None}}


def _handler_for(server: ScriptedOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            headers: dict[str, Any]
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            with server._lock:
                server.wire.append((self.path, list(self.headers.items()), raw))
            body = json.loads(raw or b"{}")
            if not self.path.rstrip("/").endswith("/chat/completions"):
                status, payload, headers = 404, _error_body(f"no route {self.path}"), {}
            else:
                with server._lock:
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                try:
                    if server.latency > 0:
                        time.sleep(server.latency)
                    status, payload, headers = server.answer_with_headers(body)
                finally:
                    with server._lock:
                        server.in_flight -= 1
            data = json.dumps(payload).encode("utf-8")
            padding, compressed, drip = headers.pop(_SHAPE, (0, False, 0.0))
            data = b" " * padding + data
            if compressed:
                data = gzip.compress(data)
                headers["Content-Encoding"] = "gzip"
            if drip:
                self._drip(drip)
                return
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _drip(self, seconds: float) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(100_000):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(seconds)
            except OSError:
                pass  # the client hung up
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: pytest shows the requests through `server.requests`

    return Handler


@pytest.fixture
def openai_server() -> Iterator[ScriptedOpenAI]:
    """A running scripted server; stopped after the test."""
    with ScriptedOpenAI() as server:
        yield server
