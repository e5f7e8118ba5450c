"""Values no store can hold (a lone UTF-16 surrogate, `"\\ud800"`: valid JSON, and what a
command line makes of undecodable bytes) are refused at the boundary where they come in:
a 422 over HTTP (SQLite and PostgreSQL), one line from the CLI, a failed step for a
model's output or a tool's result; never a 500 or a traceback (rt5 t4, t5, t26)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import EXAMPLES, FIXTURES, RecordingNotifier, ScriptedModel
from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import Served, deploy_project, served
from tests.test_server_api import assert_problem, events
from tests.test_server_signals import ORDER, PAID, payment_project
from twelvefold.cli import cli
from twelvefold.runtime.api import InputError, Runtime
from twelvefold.runtime.codec import unstorable
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.types import ModelOutput, StepFailed, ToolResult

PATIENCE = FIXTURES / "patience.agent"
PAYMENT = EXAMPLES / "payment.agent"
LONE = b'"\\ud800"'  # JSON text for a lone surrogate


def test_unstorable_names_the_place_of_a_lone_surrogate() -> None:
    assert unstorable({"a": ["ok", "x\ud800"]}, "the input") == (
        "the input.a[1] holds a lone surrogate (\\ud800) at character 1: text must be valid Unicode"
    )
    assert unstorable({"\udfff": 1}, "v") is not None
    assert unstorable({"a": ["ok", "\U0001f600", "\x00"], "n": 1.5}, "v") is None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def s(request: pytest.FixtureRequest, tmp_path: Path, openai_server: ScriptedOpenAI) -> Any:
    agents = [deploy_project(tmp_path / "deploy"), payment_project(tmp_path / "payment")]
    store: Path | str = tmp_path / "threads.db"
    if request.param == "postgres":
        store = request.getfixturevalue("postgres_url")
    async with served(agents, store, openai_server) as running:
        yield running


@pytest.mark.anyio
@pytest.mark.usefixtures("collected")
async def test_a_lone_surrogate_in_a_launch_input_or_an_event_value_is_a_422(s: Served) -> None:
    json_body = {"content-type": "application/json"}
    async with s.client("bob") as client:
        for path, body in [
            ("/v1/agents/deploybot/threads", b'{"input":' + LONE + b"}"),
            ("/v1/agents/deploybot/threads?wait=true", b'{"input":' + LONE + b"}"),
            (
                "/v1/agents/payment/threads",
                b'{"input":{"order_id":' + LONE + b',"email":"e","amount_cents":1}}',
            ),
        ]:
            refused = await client.post(path, content=body, headers=json_body)
            assert_problem(refused, 422, "lone surrogate", "the input")
        listed = (await client.get("/v1/threads")).json()
        assert listed == [], "nothing was launched"
        waiting = await client.post("/v1/agents/payment/threads?wait=true", json={"input": ORDER})
    view = waiting.json()
    value = json.dumps(PAID).replace('"pay-77"', LONE.decode()).encode()
    async with s.client("ana") as client:
        refused = await client.post(
            f"/v1/threads/{view['thread_id']}/signals",
            content=b'{"type":"PaymentReceived","value":' + value + b"}",
            headers=json_body,
        )
    assert_problem(refused, 422, "lone surrogate", "the event's value.reference")
    assert len(await events(s, view["thread_id"])) == view["events"], "nothing recorded"


# ---- the CLI and the library ---------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "threads.db")
    yield opened
    opened.close()


def test_the_cli_refuses_an_undecodable_input_or_comment_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TWELVEFOLD_DB", raising=False)
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_LOG", "0")
    runner = CliRunner()
    # What Python makes of the bytes b"\xff" on a command line (surrogateescape).
    run = runner.invoke(cli, ["run", str(PATIENCE), "--input", "tidy \udcff"])
    assert run.exit_code == 1, run.output
    (line,) = run.stderr.strip().splitlines()
    assert "lone surrogate (\\udcff)" in line and "Traceback" not in run.output
    typed = tmp_path / "input.json"
    typed.write_bytes(b'"tidy ' + LONE[1:])
    from_file = runner.invoke(cli, ["run", str(PATIENCE), "--input", f"@{typed}"])
    assert from_file.exit_code in (1, 2) and "Traceback" not in from_file.output


def test_json_text_with_a_lone_surrogate_in_a_string_names_its_field_as_the_api_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rt15 #7: pydantic's reader refuses the escape as `value: Invalid JSON: unexpected
    end of hex escape at line 1 column 20`, a field named `value` and JSON that is valid;
    the CLI now says what the HTTP API says of the same value (the test above)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_LOG", "0")
    db = str(tmp_path / "t.db")
    runner = CliRunner()
    order = json.dumps(ORDER).replace('"o-1"', LONE.decode())
    run = runner.invoke(cli, ["run", str(PAYMENT), "--input", order, "--db", db])
    assert run.exit_code == 1, run.output
    assert run.stderr == (
        "error: the input.order_id holds a lone surrogate (\\ud800) at character 0: text must"
        " be valid Unicode\n"
    )
    launched = runner.invoke(cli, ["run", str(PAYMENT), "--input", json.dumps(ORDER),
                                   "--db", db, "--json"])  # fmt: skip
    view = json.loads(launched.stdout)
    paid = json.dumps({**PAID, "reference": "x\ud800"}, ensure_ascii=True)
    sent = runner.invoke(cli, ["send", view["thread_id"], "PaymentReceived", paid, "--db", db])
    assert sent.exit_code == 1, sent.output
    assert sent.stderr == (
        "error: the event's value.reference holds a lone surrogate (\\ud800) at character 1:"
        " text must be valid Unicode\n"
    )
    # Text that is not JSON at all keeps pydantic's words
    broken = runner.invoke(cli, ["run", str(PAYMENT), "--input", order[:-1], "--db", db])
    assert broken.exit_code == 1 and "Invalid JSON" in broken.stderr


NODE_AGENT = """agent deep "Deep input." {
  input Node
  start done
}

type Node { value: int, next: Node? }

final done(Node)
"""


def test_a_value_too_deep_is_named_by_its_fields_in_the_agent_and_in_one_short_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rt17: a field `next` is the attribute `next_` of its generated class; the message
    named the input's place by the attribute, 101 times over (a line of 700 characters).
    Now by the field's name, its middle cut out."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_LOG", "0")
    (tmp_path / "deep.agent").write_text(NODE_AGENT)
    node: Any = None
    for value in range(120):
        node = {"value": value, "next": node}
    runner = CliRunner()
    run = runner.invoke(cli, ["run", "deep.agent", "--input", json.dumps(node), "--db", "t.db"])
    assert run.exit_code == 1, run.output
    assert run.stderr == (
        "error: the input.next.next.next.next.next.next….next.next.next.next is nested more"
        " than 100 levels deep: a store could not read it back\n"
    )
    shallow = {"value": 1, "next": {"value": 2, "next": {"value": 3, "next": None}}}
    shallow["next"]["next"]["next"] = {"value": 4, "next": {"value": "x\ud800", "next": None}}
    refused = runner.invoke(cli, ["run", "deep.agent", "--input", json.dumps(shallow)])
    assert refused.exit_code == 1, refused.output
    assert "the input.next.next.next.next.value holds a lone surrogate" in refused.stderr


def test_a_comment_or_an_answer_that_cannot_be_stored_is_refused(
    store: SqliteStore, tmp_path: Path
) -> None:
    rt = Runtime(store, model=ScriptedModel([{"type": "Change", "what": "x"}]),
                 notifier=RecordingNotifier(), cache_dir=tmp_path / "cache")  # fmt: skip
    view = rt.launch(PATIENCE, "tidy")
    with pytest.raises(InputError, match="the comment holds a lone surrogate"):
        rt.resume(view.id, request=view.request, reject=True, comment="no \ud800", by="ana")
    with pytest.raises(InputError, match="the reason holds a lone surrogate"):
        rt.cancel(view.id, reason="\ud800")
    assert rt.get(view.id).seq == view.seq


def test_a_model_output_that_cannot_be_stored_fails_the_step(
    store: SqliteStore, tmp_path: Path
) -> None:
    model = ScriptedModel([{"type": "Change", "what": "x\ud800"}] * 5)
    rt = Runtime(store, model=model, notifier=RecordingNotifier(), cache_dir=tmp_path / "cache")
    view = rt.launch(PATIENCE, "tidy")
    logged = rt.events(view.id)
    failures = [e for e in logged if isinstance(e, StepFailed)]
    assert failures and failures[0].error.type == "Unstorable"
    assert "the model's output.what holds a lone surrogate" in failures[0].error.message
    assert not any(isinstance(e, ModelOutput) for e in logged), "never recorded"


def test_a_tool_result_that_cannot_be_stored_fails_the_step(
    store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PATIENCE, project / "patience.agent")
    (project / "patience_tools.py").write_text(
        'def apply(change):\n    return {"message": "\\ud800"}\n'
    )
    model = ScriptedModel([{"type": "Change", "what": "x"}])
    rt = Runtime(store, model=model, notifier=RecordingNotifier(), cache_dir=tmp_path / "cache",
                 prompts_dir=FIXTURES / "prompts")  # fmt: skip
    view = rt.launch(project / "patience.agent", "tidy")
    done = rt.resume(view.id, request=view.request, approve=True, by="ana")
    logged = rt.events(view.id)
    assert not any(isinstance(e, ToolResult) for e in logged)
    (failed,) = [e for e in logged if isinstance(e, StepFailed)]
    assert (failed.step, failed.error.type) == ("apply", "Unstorable")
    assert "the tool's result.message" in failed.error.message
    assert done.status in ("failed", "waiting")


def test_a_tool_error_whose_message_cannot_be_stored_is_recorded_escaped(
    store: SqliteStore, tmp_path: Path
) -> None:
    """An HTTP client decoding an error body with `surrogateescape` leaves lone surrogates
    in the message a tool raises: the run crashed writing the failure (rt6), the thread
    left `running`. A failure must always be recordable: its message is kept escaped."""
    import shutil

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PATIENCE, project / "patience.agent")
    (project / "patience_tools.py").write_text(
        "def apply(change):\n"
        "    raise RuntimeError(b'bad gateway \\xff'.decode('utf-8', 'surrogateescape'))\n"
    )
    model = ScriptedModel([{"type": "Change", "what": "x"}])
    rt = Runtime(store, model=model, notifier=RecordingNotifier(), cache_dir=tmp_path / "cache",
                 prompts_dir=FIXTURES / "prompts")  # fmt: skip
    view = rt.launch(project / "patience.agent", "tidy")
    rt.resume(view.id, request=view.request, approve=True, by="ana")
    (failed,) = [e for e in rt.events(view.id) if isinstance(e, StepFailed)]
    assert (failed.step, failed.error.type) == ("apply", "RuntimeError")
    assert failed.error.message == "bad gateway \\udcff"


def test_a_custom_models_error_whose_message_cannot_be_stored_is_recorded_escaped(
    store: SqliteStore, tmp_path: Path
) -> None:
    from twelvefold.runtime.model import ModelReply, ModelRequest

    class Raising:
        async def complete(self, request: ModelRequest) -> ModelReply:
            raise ConnectionError(b"\xfe reset".decode("utf-8", "surrogateescape"))

    rt = Runtime(store, model=Raising(), notifier=RecordingNotifier(), cache_dir=tmp_path / "c")
    view = rt.launch(PATIENCE, "tidy")
    (failed, *_) = [e for e in rt.events(view.id) if isinstance(e, StepFailed)]
    assert (failed.error.type, failed.error.message) == ("ConnectionError", "\\udcfe reset")


@pytest.mark.parametrize(
    ("key", "step"),
    [("k.y", '["k.y"]'), ("a[0]", '["a[0]"]'), ("…", '["\\u2026"]'), ('x"] y', '["x\\"] y"]')],
)
def test_a_key_is_one_step_of_a_place_however_it_is_spelt(key: str, step: str) -> None:
    """rt20: a mapping's key was written as `.key`, so a key holding `.`, `[` or `…` read
    as several steps, and the cut of a long place fell inside it."""
    assert unstorable({"m": {key: "x\ud800"}}, "the input") == (
        f"the input.m{step} holds a lone surrogate (\\ud800) at character 1: text must be "
        "valid Unicode"
    )
    value: Any = "x\ud800"
    for _ in range(40):
        value = {key: value}
    said = unstorable({"m": value}, "the input")
    assert said is not None
    place = said.removesuffix(
        " holds a lone surrogate (\\ud800) at character 1: text must be valid Unicode"
    )
    assert len(place) < 100
    head, tail = place.removeprefix("the input.m").split("…")  # (a key's own `…` is escaped)
    assert head and tail
    assert head == step * (len(head) // len(step)), head
    assert tail == step * (len(tail) // len(step)), tail


def test_a_huge_key_is_cut_too() -> None:
    """rt22: the last step was always shown whole: a key of 100,000 characters made a
    message of 100,000."""
    said = unstorable({"m": {"k" * 100_000: "x\ud800"}}, "the input")
    assert said is not None and len(said) < 200, len(said or "")
    assert said.startswith("the input.m….kkkk") and "k… holds a lone surrogate" in said, said
