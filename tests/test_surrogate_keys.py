"""A key that holds a lone UTF-16 surrogate (`{"\\ud800": 1}`: JSON text Python's json
reads and pydantic's does not, and no store can hold) is refused where JSON from outside
comes in, saying that a key holds one and where that key is, in the words
`codec.unstorable` uses for the same value given as data (rt15 #7). Before, the CLI said
`the input is not a valid Order: value: Invalid JSON: unexpected end of hex escape`, and
the HTTP API `value: Input should be a valid string, unable to parse raw data as a
unicode string` (or `body: …` for a key of the body itself): a field named `value` that
the input does not have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.runtime_helpers import EXAMPLES
from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import deploy_project, served
from tests.test_server_api import assert_problem, events, launch
from tests.test_server_signals import ORDER, PAID, payment_project
from twelvefold.cli import cli
from twelvefold.runtime.api import InputError, Runtime
from twelvefold.runtime.codec import unstorable
from twelvefold.runtime.jsonkeys import LoneSurrogateKey, loads, refuse_repeated_keys
from twelvefold.runtime.store import SqliteStore

PAYMENT = EXAMPLES / "payment.agent"
WHY = "holds a lone surrogate (\\ud800) at character 0: text must be valid Unicode"
ORDER_TEXT = '{"order_id": "o-1", "email": "e", "amount_cents": 1, "\\ud800": 1}'
PAID_TEXT = '{"invoice_id": "i", "amount_cents": 1, "reference": "r", "\\ud800": 1}'


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize(
    ("text", "data", "where"),
    [
        ('{"\\ud800": 1}', {"\ud800": 1}, ()),
        ('{"a": [0, {"b": 1, "x\\udfff": 2}]}', {"a": [0, {"b": 1, "x\udfff": 2}]}, ("a", 1)),
        ('{"a": {"\\ud800": 1, "\\ud800": 2}}', {"a": {"\ud800": 1}}, ("a",)),  # before twice
        # The first in the document's order, however deep the one after it
        ('[{"\\udc00": 1}, [{"\\ud800": {"\\ud801": 1}}]]', [{"\udc00": 1}], (0,)),
        # A raw surrogate in a `str` (what a command line makes of undecodable bytes)
        ('{"k": {"\udcff": 1}}', {"k": {"\udcff": 1}}, ("k",)),
    ],
)
def test_a_surrogate_key_is_refused_naming_its_place_as_unstorable_does(
    text: str, data: object, where: tuple[object, ...]
) -> None:
    for read in (loads, refuse_repeated_keys):
        with pytest.raises(LoneSurrogateKey) as refused:
            read(text)
        assert refused.value.where == where
        assert refused.value.at("the input") == unstorable(data, "the input")
    if text.isascii():  # escapes: as bytes too (a raw surrogate has no UTF-8 to send)
        with pytest.raises(LoneSurrogateKey):
            loads(text.encode())


def test_str_of_the_refusal_is_the_path_to_the_object_as_for_a_key_given_twice() -> None:
    with pytest.raises(LoneSurrogateKey) as refused:
        loads('{"a": [{"\\ud800": 1}]}')
    assert str(refused.value) == f"a.0 (a key) {WHY}"
    with pytest.raises(LoneSurrogateKey) as top:
        loads('{"\\ud800": 1}')
    assert str(top.value) == f"a key {WHY}"


def test_a_surrogate_pair_in_a_key_is_one_character_and_fine() -> None:
    assert loads('{"\\ud83d\\ude00": 1}') == {"\U0001f600": 1}
    refuse_repeated_keys('{"\\ud83d\\ude00": 1}')


def test_run_and_send_say_which_key_holds_a_lone_surrogate(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    result = invoke("run", str(PAYMENT), "--input", ORDER_TEXT, "--db", str(db))
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: the input (a key) {WHY}\n"
    nested = '{"order_id": "o-1", "email": "e", "amount_cents": 1, "x": [{"\\ud800": 1}]}'
    result = invoke("run", str(PAYMENT), "--input", nested, "--db", str(db))
    assert result.stderr == f"error: the input.x[0] (a key) {WHY}\n"
    launched = invoke("run", str(PAYMENT), "--input", json.dumps(ORDER), "--db", str(db), "--json")
    assert launched.exit_code == 0, launched.output
    view = json.loads(launched.stdout)
    result = invoke("send", view["thread_id"], "PaymentReceived", PAID_TEXT, "--db", str(db))
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: the event's value (a key) {WHY}\n"
    with Runtime(SqliteStore(db)) as rt:
        assert [info.id for info in rt.threads()] == [view["thread_id"]]  # one launched
        assert rt.get(view["thread_id"]).seq == view["events"]  # nothing recorded


def test_the_library_given_text_says_the_same(tmp_path: Path) -> None:
    with Runtime(SqliteStore(tmp_path / "t.db"), cache_dir=tmp_path / "cache") as rt:
        with pytest.raises(InputError) as refused:
            rt.launch(PAYMENT, ORDER_TEXT)
        assert str(refused.value) == f"the input (a key) {WHY}"
        assert rt.threads() == []


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.usefixtures("collected")
async def test_the_api_says_which_key_of_the_body_holds_a_lone_surrogate(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    agents = [deploy_project(tmp_path / "deploy"), payment_project(tmp_path / "payment")]
    json_body = {"content-type": "application/json"}
    order = json.dumps(ORDER)[:-1]
    async with served(agents, tmp_path / "threads.db", openai_server) as s:
        async with s.client("bob") as client:
            for body, where, loc in [
                ('{"input": ' + order + ', "\\ud800": 1}}', "body.input", ["input"]),
                ('{"input": ' + json.dumps(ORDER) + ', "\\ud800": 1}', "body", []),
                ('{"input": {"a": [{"\\ud800": 1}]}}', "body.input.a[0]", ["input", "a", "0"]),
            ]:
                refused = await client.post(
                    "/v1/agents/payment/threads", content=body, headers=json_body
                )
                assert_problem(refused, 422)
                assert refused.json()["detail"] == f"{where} (a key) {WHY}"
                assert refused.json()["errors"] == [{"loc": ["body", *loc], "msg": f"a key {WHY}"}]
            assert (await client.get("/v1/threads")).json() == [], "nothing was launched"
            waiting = await client.post(
                "/v1/agents/payment/threads?wait=true", json={"input": ORDER}
            )
        view = waiting.json()
        paid = json.dumps(PAID)[:-1] + ', "\\ud800": 1}'
        async with s.client("ana") as client:
            refused = await client.post(
                f"/v1/threads/{view['thread_id']}/signals",
                content='{"type": "PaymentReceived", "value": ' + paid + "}",
                headers=json_body,
            )
        assert_problem(refused, 422)
        assert refused.json()["detail"] == f"body.value (a key) {WHY}"
        assert len(await events(s, view["thread_id"])) == view["events"], "nothing recorded"


def test_graph_names_the_events_file_and_the_path_to_the_key(tmp_path: Path) -> None:
    events = tmp_path / "events.json"
    events.write_text('[{"kind": "started", "step": "bill", "input": {"\\ud800": 1}}]')
    result = invoke("graph", str(PAYMENT), "--events", str(events))
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: {events}: 0.input (a key) {WHY}\n"


@pytest.mark.anyio
@pytest.mark.usefixtures("collected")
async def test_a_decision_with_such_a_key_is_refused_and_nothing_recorded(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    async with served(deploy_project(tmp_path / "deploy"), tmp_path / "t.db", openai_server) as s:
        view = await launch(s, "bob")
        before = await events(s, view["thread_id"])
        decision = json.dumps({"request": view["request"], "decision": "reject", "comment": "no"})
        async with s.client("ana") as client:
            refused = await client.post(
                f"/v1/threads/{view['thread_id']}/decisions",
                content=decision[:-1] + ', "\\udfff": "approve"}',
                headers={"content-type": "application/json"},
            )
        assert_problem(refused, 422)
        assert refused.json()["detail"] == f"body (a key) {WHY.replace('d800', 'dfff')}"
        assert await events(s, view["thread_id"]) == before
