"""Whatever a `Model` of the user's own raises from `complete` fails the step, as a tool's
exception does: a `step_failed` in the log, and the step's `on error` taken. Found by a
review: a custom model that hit Python's recursion limit (or raised anything but a
`ModelError`) stopped the whole run with a traceback. Only what ends a process
(KeyboardInterrupt, SystemExit) or a task (a cancellation) goes on up. Every path a model
call takes: the synchronous one (a `MemoryStore`), the ordinary loop, and a judge's call.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_helpers import RecordingNotifier, as_output
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.model import ModelReply, ModelRequest
from twelvefold.runtime.store import MemoryStore
from twelvefold.runtime.types import StepFailed, Usage

FIXTURES = Path(__file__).parent / "checks_fixtures"

AGENT = """\
agent custom { start decide }
type Done "Finished." { message: string }
llm decide -> Done {
  prompt "decide.j2"
  on Done -> done
  on error -> failed
}
final done(Done)
final failed
"""


class OrdinaryStore(MemoryStore):
    """A `MemoryStore` the synchronous path does not take: the ordinary loop runs."""


def recurse(depth: int) -> int:
    return recurse(depth + 1) + 1


class Raising:
    """Answers once re-asked `paid_attempts` times (each paid 100 + 10 tokens, said in
    `request.attempts`), then raises `error`; `suspend` waits on the event loop first."""

    def __init__(self, error: BaseException | None, *, suspend: bool = False) -> None:
        self.error, self.suspend = error, suspend
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.calls += 1
        if self.suspend:
            await asyncio.sleep(0)
        if request.attempts is not None:
            request.attempts.paid = Usage(input_tokens=100, output_tokens=10)
        if self.error is None:
            return ModelReply(as_output(request, {"type": "Done", "message": "ok"}), Usage())
        if isinstance(self.error, RecursionError):
            recurse(0)  # the real thing, not a RecursionError made by hand
        raise self.error


@pytest.fixture
def agent(tmp_path: Path) -> Path:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "decide.j2").write_text("{{ input }}\n")
    path = tmp_path / "custom.agent"
    path.write_text(AGENT)
    return path


@pytest.mark.parametrize("suspend", [False, True], ids=["answers at once", "waits first"])
@pytest.mark.parametrize("store", [MemoryStore, OrdinaryStore], ids=["fast path", "ordinary"])
@pytest.mark.parametrize(
    "error",
    [RecursionError("deep"), MemoryError("no room"), RuntimeError("the client broke")],
    ids=["RecursionError", "MemoryError", "RuntimeError"],
)
def test_an_exception_of_a_custom_model_fails_the_step(
    agent: Path, store: type[MemoryStore], suspend: bool, error: Exception
) -> None:
    model = Raising(error, suspend=suspend)
    with Runtime(store(), model=model, notifier=RecordingNotifier()) as rt:
        view = rt.launch(agent, "go")
        events = rt.events(view.id)
    assert (view.status, view.step) == ("finished", "failed")
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == type(error).__name__
    if not isinstance(error, RecursionError):
        assert failed.error.message == str(error)
    # What it said its finished attempts cost is recorded, as for any failed call.
    assert failed.usage is not None
    assert (failed.usage.input_tokens, failed.usage.output_tokens) == (100, 10)


@pytest.mark.parametrize("store", [MemoryStore, OrdinaryStore], ids=["fast path", "ordinary"])
@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3)], ids=["Ctrl-C", "exit"])
def test_what_ends_the_process_is_not_a_step_failure(
    agent: Path, store: type[MemoryStore], error: BaseException
) -> None:
    runtime = Runtime(store(), model=Raising(error), notifier=RecordingNotifier())
    with runtime as rt, pytest.raises(type(error)):
        rt.launch(agent, "go")


def test_an_exception_of_a_custom_model_at_a_judge_fails_the_step(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES, tmp_path / "f")

    class JudgeRaises(Raising):
        async def complete(self, request: ModelRequest) -> ModelReply:
            if request.action.step == "decide":
                output = as_output(request, {"amount": 5, "note": "ok", "type": "Refund"})
                return ModelReply(output, Usage(input_tokens=300, output_tokens=40))
            return await super().complete(request)

    claim = {"order": "o-17", "amount": 40.0, "api_key": "sk-live-do-not-show"}
    model = JudgeRaises(RecursionError())
    with Runtime(MemoryStore(), model=model, notifier=RecordingNotifier()) as rt:
        view = rt.launch(tmp_path / "f" / "refunds.agent", claim)
        events = rt.events(view.id)
    assert (view.status, view.step) == ("finished", "gave_up")
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "JudgeError" and "RecursionError" in failed.error.message
    assert failed.usage is not None  # the judged call and the judge's paid attempt
    assert (failed.usage.input_tokens, failed.usage.output_tokens) == (400, 50)


class NamesNoModel(Raising):
    """Answers every call, but its `requested_model` (which model a call asks for, read
    before the call) raises `error`."""

    def requested_model(self, action: object) -> str:
        if isinstance(self.error, RecursionError):
            recurse(0)
        assert self.error is not None
        raise self.error


@pytest.mark.parametrize("store", [MemoryStore, OrdinaryStore], ids=["fast path", "ordinary"])
@pytest.mark.parametrize(
    "error", [RecursionError(), LookupError("no such model")], ids=["RecursionError", "own"]
)
def test_a_custom_model_whose_requested_model_raises_fails_the_step(
    agent: Path, store: type[MemoryStore], error: Exception
) -> None:
    model = NamesNoModel(error)
    with Runtime(store(), model=model, notifier=RecordingNotifier()) as rt:
        view = rt.launch(agent, "go")
        events = rt.events(view.id)
    assert (view.status, view.step) == ("finished", "failed")
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == type(error).__name__
    assert model.calls == 0  # refused before the call: nothing was paid for


def test_a_judge_whose_requested_model_raises_fails_the_check(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES, tmp_path / "f")

    class JudgeNamesNone(Raising):
        async def complete(self, request: ModelRequest) -> ModelReply:
            output = as_output(request, {"amount": 5, "note": "ok", "type": "Refund"})
            return ModelReply(output, Usage(input_tokens=300, output_tokens=40))

        def requested_model(self, action: Any) -> str:
            if action.step != "decide":
                raise LookupError("no judge model")
            return "gpt-4o-mini"

    claim = {"order": "o-17", "amount": 40.0, "api_key": "sk-live-do-not-show"}
    with Runtime(MemoryStore(), model=JudgeNamesNone(None), notifier=RecordingNotifier()) as rt:
        view = rt.launch(tmp_path / "f" / "refunds.agent", claim)
        events = rt.events(view.id)
    assert (view.status, view.step) == ("finished", "gave_up")
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "JudgeError" and "LookupError" in failed.error.message


@pytest.mark.parametrize("store", [MemoryStore, OrdinaryStore], ids=["fast path", "ordinary"])
def test_a_cassette_that_cannot_be_recorded_to_stops_the_run_and_fails_no_step(
    agent: Path, store: type[MemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one exception to the rule: `--record` on a full disk is the runtime's own
    failure, not the call's. The run stops naming the file; the thread stays at the
    step (docs/runtime.md, "The command line"), and a resume calls the model again."""
    import errno
    import os

    from twelvefold.runtime import cassette
    from twelvefold.runtime.types import Started

    def full(fd: int, *_: object) -> object:
        os.close(fd)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    recorder = cassette.CassetteRecorder(Raising(None), agent.parent / "run.jsonl")
    with Runtime(store(), model=recorder, notifier=RecordingNotifier()) as rt:
        rt.agent(agent)  # compiled and cached before writes start to fail
        monkeypatch.setattr(cassette.os, "fdopen", full)
        with pytest.raises(OSError, match="No space left on device") as stopped:
            rt.launch(agent, "go")
        assert stopped.value.filename == str(agent.parent / "run.jsonl")
        (view,) = rt.threads()
        assert view.status == "running"
        assert [type(e) for e in rt.events(view.id)] == [Started]


class Odd:
    """A custom model whose `complete` answers with something that is no proper reply."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    async def complete(self, request: ModelRequest) -> Any:
        from pydantic import BaseModel

        class Other(BaseModel):
            x: int = 1

        if self.kind == "None":
            return None
        if self.kind == "a dict":
            return {"type": "Done", "message": "ok"}
        done = as_output(request, {"type": "Done", "message": "ok"})
        if self.kind == "no usage":
            return ModelReply(done, None)  # type: ignore[arg-type]
        if self.kind == "tokens as text":
            return ModelReply(done, Usage(input_tokens="5"))  # type: ignore[arg-type]
        return ModelReply(Other(), Usage())  # an output of a type the step cannot output


@pytest.mark.parametrize("store", [MemoryStore, OrdinaryStore], ids=["fast path", "ordinary"])
@pytest.mark.parametrize(
    "kind", ["None", "a dict", "another output type", "no usage", "tokens as text"]
)
def test_a_custom_model_answering_with_no_proper_reply_fails_the_step(
    agent: Path, store: type[MemoryStore], kind: str
) -> None:
    with Runtime(store(), model=Odd(kind), notifier=RecordingNotifier()) as rt:
        view = rt.launch(agent, "go")
        events = rt.events(view.id)
    assert (view.status, view.step) == ("finished", "failed")
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "ModelError", failed.error
    assert any(word in failed.error.message for word in ("ModelReply", "output", "usage"))
