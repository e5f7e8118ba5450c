"""Cassettes: record real model outputs (through openai + instructor), replay with no server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from tests.support.openai_server import ScriptedOpenAI
from twelvefold.runtime import AgentSpec, CallModel, StateSpec
from twelvefold.runtime.cassette import (
    CassetteError,
    CassetteMiss,
    CassettePlayer,
    CassetteRecorder,
    messages_digest,
)
from twelvefold.runtime.model import Model, ModelError, ModelReply, ModelRequest, OpenAIModel
from twelvefold.runtime.types import Usage


class Multiply(BaseModel):
    """Multiply two numbers."""

    a: float
    b: float


class DoneForNow(BaseModel):
    message: str


AGENT = AgentSpec(
    name="calculator",
    description=None,
    source="calculator.agent",
    start="decide",
    input_type=str,
    types={"Multiply": Multiply, "DoneForNow": DoneForNow},
    states={"decide": StateSpec(kind="llm", line=1, outputs=("Multiply", "DoneForNow"))},
    edges=(),
)


def request(seq: int, text: str = "multiply 3 and 4", step: str = "decide") -> ModelRequest:
    action = CallModel(
        step=step, value=text, outputs=(Multiply, DoneForNow), prompt=None, retries=1
    )
    return ModelRequest(AGENT, action, [{"role": "user", "content": text}], "thread-1", seq)


def complete(model: Model, req: ModelRequest) -> ModelReply:
    return asyncio.run(model.complete(req))


def test_record_then_replay_with_the_server_stopped(tmp_path: Path) -> None:
    cassette = tmp_path / "calc.jsonl"
    with ScriptedOpenAI() as server:
        server.reply_tool({"choice": {"type": "Multiply", "a": 3, "b": 4}})
        server.reply_tool({"choice": {"type": "DoneForNow", "message": "3 × 4 = 12"}})
        real = OpenAIModel(base_url=server.base_url, api_key="k", transport_retries=0)
        recorder = CassetteRecorder(real, cassette)
        recorded = [complete(recorder, request(1)), complete(recorder, request(4, "12"))]

    lines = [json.loads(line) for line in cassette.read_text().splitlines()]
    assert lines == [
        {
            "agent": "calculator",
            "step": "decide",
            "seq": 1,
            "type": "Multiply",
            "output": {"a": 3.0, "b": 4.0},
            "usage": {"input_tokens": 11, "output_tokens": 7},
            "messages_sha256": messages_digest(request(1).messages),
        },
        {
            "agent": "calculator",
            "step": "decide",
            "seq": 4,
            "type": "DoneForNow",
            "output": {"message": "3 × 4 = 12"},
            "usage": {"input_tokens": 11, "output_tokens": 7},
            "messages_sha256": messages_digest(request(4, "12").messages),
        },
    ]

    # The server is gone: a real model call now fails, the cassette still answers.
    with pytest.raises(ModelError):
        complete(OpenAIModel(base_url=server_url(), api_key="k", transport_retries=0), request(1))
    player = CassettePlayer(cassette)
    # Matched by seq, so the order of the calls does not matter (a resume in a new process).
    assert complete(player, request(4)).output == recorded[1].output
    assert complete(player, request(1)).output == recorded[0].output
    assert type(complete(player, request(1)).output) is Multiply


def server_url() -> str:
    with ScriptedOpenAI() as server:
        return server.base_url  # stopped on exit: nothing listens there any more


def test_a_miss_names_the_step_and_what_the_cassette_has(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    cassette.write_text(
        '{"agent": "calculator", "step": "decide", "seq": 1, "type": "Multiply",'
        ' "output": {"a": 3, "b": 4}}\n'
    )
    player = CassettePlayer(cassette)
    with pytest.raises(CassetteMiss) as raised:
        complete(player, request(7))
    message = str(raised.value)
    assert "step `decide`" in message and "seq 7" in message and "[1]" in message
    with pytest.raises(CassetteMiss, match=r"step `review`.*no `review` calls"):
        complete(player, request(1, step="review"))


def test_hand_written_entries_without_seq_answer_in_order(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    cassette.write_text(
        '{"agent": "calculator", "step": "decide", "type": "Multiply",'
        ' "output": {"a": 1, "b": 2}}\n'
        "\n"
        '{"agent": "calculator", "step": "decide", "type": "DoneForNow",'
        ' "output": {"message": "2"}}\n'
    )
    player = CassettePlayer(cassette)
    assert complete(player, request(1)).output == Multiply(a=1, b=2)
    assert complete(player, request(4)).output == DoneForNow(message="2")
    with pytest.raises(CassetteMiss):
        complete(player, request(6))


def test_an_edited_output_is_validated_against_the_step(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    cassette.write_text(
        '{"agent": "calculator", "step": "decide", "seq": 1, "type": "Divide", "output": {}}\n'
        '{"agent": "calculator", "step": "decide", "seq": 2, "type": "Multiply",'
        ' "output": {"a": "three"}}\n'
    )
    player = CassettePlayer(cassette)
    with pytest.raises(CassetteError, match=r"c.jsonl:1: step `decide` cannot output `Divide`"):
        complete(player, request(1))
    with pytest.raises(CassetteError, match=r"c.jsonl:2: invalid `Multiply` output"):
        complete(player, request(2))


@pytest.mark.parametrize("a", ["true", '"3"'])
def test_an_edited_output_is_held_to_the_models_rule_nothing_is_converted(
    tmp_path: Path, a: str
) -> None:
    # The model's own `{"a": true}` would be refused and asked again (strict JSON, rt13);
    # a cassette replays model outputs, so it takes no more than a model would.
    cassette = tmp_path / "c.jsonl"
    cassette.write_text(
        '{"agent": "calculator", "step": "decide", "seq": 1, "type": "Multiply",'
        f' "output": {{"a": {a}, "b": 2}}}}\n'
    )
    with pytest.raises(CassetteError, match=r"c.jsonl:1: invalid `Multiply` output: a: "):
        complete(CassettePlayer(cassette), request(1))


def test_a_failed_call_is_recorded_and_replays_as_the_same_failure(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    with ScriptedOpenAI() as server:
        server.reply_tool({"choice": {"type": "Multiply"}})
        server.reply_tool({"choice": {"type": "Multiply", "a": 1}})
        real = OpenAIModel(base_url=server.base_url, api_key="k", transport_retries=0)
        with pytest.raises(ModelError) as recorded:
            complete(CassetteRecorder(real, cassette), request(1))
    with pytest.raises(ModelError) as replayed:
        complete(CassettePlayer(cassette), request(1))
    assert replayed.value.error == recorded.value.error
    assert replayed.value.error.type == "InvalidOutput"


def test_a_broken_line_is_reported_with_its_position(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    cassette.write_text(
        '{"agent": "calculator", "step": "decide", "type": "DoneForNow", "output": {}}\n'
        '{"step": "decide"}\n'
    )
    with pytest.raises(CassetteError, match=r"c.jsonl:2: not a cassette entry"):
        CassettePlayer(cassette)


def test_a_deploybot_run_recorded_then_replayed_through_the_runtime(tmp_path: Path) -> None:
    import io

    from tests.support.generated import EXAMPLES
    from twelvefold.runtime.api import Runtime
    from twelvefold.runtime.notify import LogNotifier

    cassette = tmp_path / "deploy.jsonl"
    agent_file = EXAMPLES / "deploybot.agent"

    def run(model: Model) -> list[str]:
        quiet = LogNotifier(io.StringIO())
        with Runtime(model=model, notifier=quiet, cache_dir=tmp_path / "cache") as runtime:
            waiting = runtime.launch(agent_file, "deploy v1.2.3 to production")
            assert (waiting.status, waiting.step) == ("waiting", "approve_deploy")
            done = runtime.resume(waiting.id, request=waiting.request, approve=True, by="carol")
            assert done.status == "finished"
            return [type(e).__name__ for e in runtime.events(done.id)]

    with ScriptedOpenAI() as server:
        server.reply_tool({"choice": {"type": "ListGitTags"}})
        server.reply_tool(
            {"choice": {"type": "DeployBackend", "tag": "v1.2.3", "env": "production"}}
        )
        server.reply_tool({"choice": {"type": "DoneForNow", "message": "v1.2.3 is live"}})
        real = OpenAIModel(base_url=server.base_url, api_key="k", transport_retries=0)
        recorded = run(CassetteRecorder(real, cassette))
        assert len(server.requests) == 3
        # The second decision saw the tool's result in its context.
        assert "<list_tags_result>" in json.dumps(server.requests[1]["messages"])

    assert run(CassettePlayer(cassette)) == recorded
    assert [json.loads(line)["seq"] for line in cassette.read_text().splitlines()] == [1, 4, 9]


def test_a_served_thread_whose_call_misses_the_cassette_fails_its_step_in_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a red team (`serve --cassette`, as `make demo` serves): a model call the
    cassette has no answer for was raised out of the run, so the server logged a
    traceback and the thread stayed `running` for ever. It is a step failure, as a model
    that cannot be reached is: in the thread's log, and one line in the server's."""
    from tests.runtime_helpers import RecordingNotifier
    from tests.support.server import deploy_project
    from twelvefold.runtime.api import AsyncRuntime, ThreadView
    from twelvefold.runtime.store import open_store
    from twelvefold.runtime.types import StepFailed
    from twelvefold.server.service import Caller, Service, served_agents

    agent = deploy_project(tmp_path / "project")
    cassette = tmp_path / "empty.jsonl"
    cassette.write_text("")

    async def served() -> ThreadView:
        runtime = AsyncRuntime(
            open_store(tmp_path / "threads.db"),
            model=CassettePlayer(cassette),
            notifier=RecordingNotifier(),
        )
        service = Service(runtime, served_agents(runtime, [agent]), sweep_seconds=0)
        await service.start()
        try:
            bob = Caller("bob", "http")
            launched = await service.launch(bob, "deploybot", "deploy v1.2.3 to production")
            return await service.wait(bob, launched.id, 60)
        finally:
            await service.stop(grace=1)

    with caplog.at_level("INFO"):
        view = asyncio.run(served())
    failures = [e for e in view.log if isinstance(e, StepFailed)]
    assert failures and all(e.error.type == "CassetteMiss" for e in failures), view.log
    assert "no answer for step `decide`" in failures[0].error.message
    assert view.status != "running"
    assert not [r for r in caplog.records if r.exc_info], caplog.text  # no traceback
    (said,) = [r.getMessage() for r in caplog.records if "CassetteMiss" in r.getMessage()]
    assert "\n" not in said and view.id in said, said


class _Answers:
    """A model that answers every call the same way."""

    async def complete(self, request: ModelRequest) -> ModelReply:
        return ModelReply(output=DoneForNow(message="ok"), usage=Usage())


def test_recording_to_a_fifo_put_at_the_name_after_the_start_does_not_hang(
    tmp_path: Path,
) -> None:
    import os

    cassette = tmp_path / "c.jsonl"
    recorder = CassetteRecorder(_Answers(), cassette)
    os.mkfifo(cassette)  # no reader: an open for writing that waits would never return
    with pytest.raises(OSError) as refused:
        complete(recorder, request(1))
    assert refused.value.filename == str(cassette)


def test_a_failed_write_names_the_cassette(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk was `error: OSError: [Errno 28] No space left on device`, no file named."""
    import errno
    import io
    import os

    from twelvefold.runtime import cassette as module

    class Full(io.BytesIO):
        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    opened: list[int] = []
    monkeypatch.setattr(module.os, "fdopen", lambda fd, *_: opened.append(fd) or Full())
    path = tmp_path / "c.jsonl"
    with pytest.raises(OSError) as failed:
        complete(CassetteRecorder(_Answers(), path), request(1))
    for fd in opened:
        os.close(fd)
    assert failed.value.filename == str(path)
    assert failed.value.strerror == "No space left on device"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("[1]", "a JSON array, not an object"),
        ("null", "a JSON null, not an object"),
        ("5", "a JSON number, not an object"),
        ('"s"', "a JSON string, not an object"),
        ('{"agent": "calculator", "step": ["decide"], "seq": 1}', "`step` is a JSON array"),
        ('{"agent": 7, "step": "decide", "seq": 1}', "`agent` is a JSON number"),
        ('{"agent": "calculator", "step": "decide", "seq": "1"}', "`seq` is a JSON string"),
        ('{"agent": "calculator", "step": "decide", "seq": true}', "`seq` is a JSON boolean"),
        ('{"agent": "calculator", "step": "decide", "type": ["x"]}', "`type` is a JSON array"),
        ('{"agent": "calculator", "step": "decide", "error": 5}', "`error` is a JSON number"),
        # Found by a red team: an answer without `output` replayed as `{}` (a type with no
        # required field passed it on as that type's value).
        ('{"agent": "calculator", "step": "decide", "type": "DoneForNow"}', "no `output`"),
        ('{"agent": "calculator", "step": "decide", "output": {}}', "no `type`"),
        ('{"agent": "calculator", "step": "decide", "seq": 1}', "no `type`"),
        ('{"agent": "calculator", "step": "decide", "error": {"type": []}}', "no string `type`"),
        (
            '{"agent": "calculator", "step": "decide", "error": {"type": "E", "message": 1}}',
            "`error.message` is a JSON number",
        ),
    ],
)
def test_an_entry_of_the_wrong_shape_refuses_the_cassette_naming_its_line(
    tmp_path: Path, line: str, problem: str
) -> None:
    """Found by a red team: a line that is JSON but not an entry's shape (`[1]`, a list
    for `type` or `step`) was an AttributeError or TypeError out of the reader, or out of
    the first call it answered (a server's thread left `running`). Every entry's shape
    is checked when the cassette is read."""
    cassette = tmp_path / "c.jsonl"
    cassette.write_text(
        '{"agent": "calculator", "step": "decide", "seq": 1, "type": "DoneForNow",'
        ' "output": {"message": "ok"}}\n\n' + line + "\n"
    )
    with pytest.raises(CassetteError) as refused:
        CassettePlayer(cassette)
    message = str(refused.value)
    assert message.startswith(f"{cassette}:3: not a cassette entry ("), message
    assert problem in message, message


def test_a_cassette_that_is_not_a_regular_file_is_refused_without_reading_it(
    tmp_path: Path,
) -> None:
    """Found by a red team: `--cassette` naming a FIFO blocked the run for good, waiting
    for a writer. A cassette is a regular file; anything else is the `OSError` naming it
    (one line from the CLI), never waited on."""
    import os

    fifo = tmp_path / "c.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match=r"not a regular file") as refused:
        CassettePlayer(fifo)
    assert refused.value.filename == str(fifo)


def test_a_cassette_that_is_not_utf8_is_refused_in_one_line(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    cassette.write_bytes(b'{"agent": "\xff"}\n')
    with pytest.raises(CassetteError, match=r"c.jsonl: not a cassette \(not UTF-8"):
        CassettePlayer(cassette)


@pytest.mark.parametrize("line", ["[1]", '{"agent":"deploybot","step":"decide","type":["x"]}'])
def test_run_with_a_cassette_of_the_wrong_shape_says_so_in_one_line(
    tmp_path: Path, line: str
) -> None:
    """End to end: `twelvefold run --cassette` with such a line is one `error:` line naming
    it, exit 1, no traceback, and no thread launched."""
    import subprocess
    import sys

    from tests.support.generated import EXAMPLES

    cassette = tmp_path / "bad.jsonl"
    cassette.write_text(line + "\n")
    db = tmp_path / "t.db"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "twelvefold",
            "run",
            str(EXAMPLES / "deploybot.agent"),
            "--input",
            "deploy v1.2.3",
            "--cassette",
            str(cassette),
            "--db",
            str(db),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    (said,) = done.stderr.splitlines()
    assert said.startswith("error: CassetteError: ") and f"{cassette}:1: not a cassette" in said


def test_recording_appends_only_to_a_cassette(tmp_path: Path) -> None:
    """Found by a red team: `--record FILE` appended to any regular file, a thread store
    included, and a link to nothing was refused only once the thread had started. Both
    are refused before any call: only a new file, an empty one or a cassette is
    appended to."""
    import os
    import sqlite3

    store = tmp_path / "threads.db"
    sqlite3.connect(store).execute("CREATE TABLE t (a)").connection.close()
    notes = tmp_path / "notes.txt"
    notes.write_text("remember the milk\n")
    before = {path: path.read_bytes() for path in (store, notes)}
    for path in (store, notes):
        with pytest.raises(CassetteError, match=r"--record appends to a cassette only"):
            CassetteRecorder(_Answers(), path)
        assert path.read_bytes() == before[path]
    dangling = tmp_path / "c.jsonl"
    dangling.symlink_to(tmp_path / "no folder" / "c.jsonl")
    with pytest.raises(OSError, match=r"a link to nothing") as refused:
        CassetteRecorder(_Answers(), dangling)
    assert refused.value.filename == str(dangling)
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError):
        CassetteRecorder(_Answers(), tmp_path / "folder")
    # A new file, an empty one and a cassette are recorded to.
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for path in (tmp_path / "new.jsonl", empty, empty):
        complete(CassetteRecorder(_Answers(), path), request(1))
    assert len(empty.read_text().splitlines()) == 2
    assert not os.path.lexists(tmp_path / "no folder")
