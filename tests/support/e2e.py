"""End-to-end pieces: a scripted "model" behind the OpenAI-compatible server, and a runtime
that reaches it through the real openai + instructor client and stores threads in SQLite.

A model's turn is what it would answer at one request: a fixed choice, or a function of
the context it was sent (the last user message), so a test shows that what the model needs
to know (a tool's result, a rejection's comment, a person's answer) actually reached it:

    turns = ModelTurns(server)
    turns.then({"type": "Multiply", "a": 3, "b": 4})
    turns.then(lambda context: {"type": "DoneForNow", "message": f"{result(context)}"})
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_helpers import RecordingNotifier
from tests.support.openai_server import Reply, ScriptedOpenAI
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.model import OpenAIModel
from twelvefold.runtime.store import SqliteStore

Choice = dict[str, Any]
Turn = Choice | Callable[[str], Choice] | Reply


class ModelTurns:
    """The server's responder: each request gets the next turn, in the tools-mode shape
    OpenAIModel asks for (one tool named after the step; `choice` tagged with `type`)."""

    def __init__(self, server: ScriptedOpenAI) -> None:
        self.turns: deque[Turn] = deque()
        self.problems: list[str] = []
        self.server = server
        server.responder = self

    def then(self, *turns: Turn) -> ModelTurns:
        self.turns.extend(turns)
        return self

    def __call__(self, body: dict[str, Any]) -> Reply:
        # Runs in the server's thread: a failed expectation is kept for the test to raise
        # (`check`) and answered as a server error, which fails the step in the thread.
        try:
            if not self.turns:
                raise AssertionError("the model was asked once more than scripted")
            turn = self.turns.popleft()
            if isinstance(turn, Reply):
                return turn
            choice = turn(context(body)) if callable(turn) else turn
        except AssertionError as exc:
            self.problems.append(f"{exc}\n--- the model's context:\n{context(body)}")
            return Reply(status=500, error=str(exc))
        return Reply(arguments={"choice": choice})

    def check(self) -> None:
        """Raise what went wrong on the server's side, if anything did."""
        if self.problems:
            raise AssertionError("\n\n".join(self.problems))

    @property
    def contexts(self) -> list[str]:
        """The last user message of every request the model received, in order."""
        return [context(body) for body in self.server.requests]


def context(body: dict[str, Any]) -> str:
    """The thread as the model saw it in one request: its last user message."""
    users = [m["content"] for m in body["messages"] if m["role"] == "user"]
    return str(users[-1]) if users else ""


def last_value(context: str, tag: str) -> float:
    """The value of the last `<tag>value: V</tag>` in the context."""
    found = re.findall(rf"<{tag}>value: ([-0-9.e]+)</{tag}>", context)
    assert found, f"no <{tag}> in the model's context:\n{context}"
    return float(found[-1])


@contextmanager
def runtime(
    server: ScriptedOpenAI, db: Path, cache: Path, notifier: RecordingNotifier | None = None
) -> Iterator[Runtime]:
    """A runtime on a SQLite file whose model is the scripted server, through instructor."""
    model = OpenAIModel(
        model="scripted-model", base_url=server.base_url, api_key="test", transport_retries=0
    )
    store = SqliteStore(db)
    with Runtime(
        store, model=model, notifier=notifier or RecordingNotifier(), cache_dir=cache
    ) as rt:
        try:
            yield rt
        finally:
            store.close()


# ---- fixtures the end-to-end files share (each file gives its own module-scoped `cache`) ----


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def rt(
    openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path, notifier: RecordingNotifier
) -> Iterator[Runtime]:
    with runtime(openai_server, tmp_path / "threads.db", cache, notifier) as opened:
        yield opened


@pytest.fixture
def model(openai_server: ScriptedOpenAI) -> Iterator[ModelTurns]:
    turns = ModelTurns(openai_server)
    yield turns
    turns.check()
