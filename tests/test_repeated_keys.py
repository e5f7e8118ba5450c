"""JSON handed in from outside that gives a key twice is refused wherever it comes in, as
the HTTP API refuses such a body (tests/test_server_json_bodies.py): the CLI's `run
--input` and `send` value, the library's `launch` and `send` given JSON text, a cassette,
an event log given to `graph --events`. Each names the key and where it is; nothing is
recorded.

Readers disagree on which of two values counts (Python's json and pydantic keep the last,
many proxies and audit logs the first): `--input '{"amount_cents": 1, "amount_cents": 2}'`
was recorded as 2 (rt14), what the person who read the command line saw first was 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.runtime_helpers import EXAMPLES
from twelvefold.cli import cli
from twelvefold.runtime.api import InputError, Runtime, typed_input
from twelvefold.runtime.cassette import CassetteError, CassettePlayer
from twelvefold.runtime.jsonkeys import RepeatedKey, loads, refuse_repeated_keys
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.strict import strictly

PAYMENT = EXAMPLES / "payment.agent"
WHY = (
    "is given twice in one object; give each key once (readers disagree on which of the two counts)"
)
ORDER = '{"order_id": "o-1", "email": "ana@example.com", "amount_cents": 1250}'
TWICE = '{"order_id": "o-1", "email": "ana@example.com", "amount_cents": 1, "amount_cents": 2}'
PAID_TWICE = '{"invoice_id": "i", "amount_cents": "77", "amount_cents": 1250, "reference": "r"}'

CART = """\
agent cart {
  input Cart
  start decide
}

type Line { sku: string
  qty: int }
type Cart { lines: list[Line] }
type Done { message: string }

llm decide -> Done {
  prompt "decide.j2"
  on Done -> done
}

final done(Done)
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def threads_in(db: Path) -> list[str]:
    if not db.exists():
        return []
    with Runtime(SqliteStore(db)) as rt:
        return [info.id for info in rt.threads()]


@pytest.fixture
def cart(tmp_path: Path) -> Path:
    (tmp_path / "cart.agent").write_text(CART)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "decide.j2").write_text("{{ context }}\n")
    return tmp_path / "cart.agent"


def test_run_refuses_an_input_that_gives_a_key_twice_and_records_nothing(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    result = invoke("run", str(PAYMENT), "--input", TWICE, "--db", str(db))
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"error: the input is not a valid Order: amount_cents: the key `amount_cents` {WHY}\n"
    )
    assert threads_in(db) == []
    # --json: the same error as a document on stdout, for a script reading it
    result = invoke("run", str(PAYMENT), "--input", TWICE, "--db", str(db), "--json")
    assert result.exit_code == 1, result.output
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "InputError" and "`amount_cents` is given twice" in error["message"]
    assert threads_in(db) == []


def test_run_names_a_key_given_twice_deep_in_the_input_by_its_path(
    cart: Path, tmp_path: Path
) -> None:
    db = tmp_path / "t.db"
    given = '{"lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 1, "qty": 2}]}'
    result = invoke("run", str(cart), "--input", given, "--db", str(db))
    assert result.exit_code == 1, result.output
    assert (
        result.stderr == f"error: the input is not a valid Cart: lines.1.qty: the key `qty` {WHY}\n"
    )
    assert threads_in(db) == []


def test_send_refuses_a_value_that_gives_a_key_twice_and_records_nothing(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    launched = invoke("run", str(PAYMENT), "--input", ORDER, "--db", str(db), "--json")
    assert launched.exit_code == 0, launched.output
    view = json.loads(launched.stdout)
    assert view["waiting_for"] == "event"
    result = invoke("send", view["thread_id"], "PaymentReceived", PAID_TWICE, "--db", str(db))
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        "error: the event is not a valid PaymentReceived: amount_cents: the key"
        f" `amount_cents` {WHY}\n"
    )
    shown = json.loads(invoke("show", view["thread_id"], "--db", str(db), "--json").stdout)
    assert shown["events"] == view["events"] and shown["status"] == "waiting"


def test_the_library_refuses_json_text_that_gives_a_key_twice(cart: Path, tmp_path: Path) -> None:
    with Runtime(SqliteStore(tmp_path / "t.db"), cache_dir=tmp_path / "cache") as rt:
        with pytest.raises(InputError, match=r"amount_cents: the key `amount_cents` is given"):
            rt.launch(PAYMENT, TWICE)
        view = rt.launch(PAYMENT, ORDER)
        with pytest.raises(InputError, match=r"amount_cents: the key `amount_cents` is given"):
            rt.send(view.id, "PaymentReceived", PAID_TWICE)
        assert rt.get(view.id).seq == view.seq
        assert [info.id for info in rt.threads()] == [view.id]
        # The same key in two objects is no repetition; as data, a dict cannot repeat one.
        agent = rt.agent(cart)
        lines = '{"lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]}'
        assert typed_input(agent, lines).lines[1].qty == 2
        assert typed_input(agent, json.loads(lines)).lines[1].qty == 2


@pytest.mark.parametrize(
    ("text", "key", "where"),
    [
        ('{"a": 1, "a": 2}', "a", ()),
        ('[{"x": {"b": 1}}, {"x": {"b": 1, "c": 2, "b": 3}}]', "b", ("1", "x")),
        ('{"a": {"a": 1}, "b": [1, 2, {"n": 1e400, "n": -0.5e-3}]}', "n", ("b", "2")),
    ],
)
def test_refused_text_names_the_key_and_the_path_to_its_object(
    text: str, key: str, where: tuple[str, ...]
) -> None:
    for read in (loads, refuse_repeated_keys, lambda t: strictly(dict, t)):
        with pytest.raises(RepeatedKey) as refused:
            read(text)
        assert (refused.value.key, refused.value.where) == (key, where)
        assert str(refused.value) == ".".join((*where, key)) + f": the key `{key}` {WHY}"


def test_the_check_reads_keys_only_so_no_number_stops_it() -> None:
    # Python's int() refuses 4300 digits and more; the check converts no number.
    text = '{"n": 1, "n": 9' + "9" * 5000 + "}"
    for read in (refuse_repeated_keys, lambda t: strictly(dict, t)):
        with pytest.raises(RepeatedKey) as refused:
            read(text)
        assert str(refused.value) == f"n: the key `n` {WHY}"


@pytest.mark.parametrize(
    "text", ['{"a": 1, "b": {"a": 2}}', "not JSON", '{"a": 1, "a"', "[" * 5000]
)
def test_text_that_repeats_no_key_or_is_not_json_is_left_to_its_reader(text: str) -> None:
    refuse_repeated_keys(text)  # the reader that follows says what is wrong, if anything


def test_a_cassette_line_that_gives_a_key_twice_is_refused_naming_the_line(
    tmp_path: Path,
) -> None:
    cassette = tmp_path / "c.jsonl"
    cassette.write_text(
        '{"agent": "payment", "step": "thank", "seq": 5, "type": "ThankYou",'
        ' "output": {"text": "Thanks!"}}\n'
        '{"agent": "payment", "step": "thank", "seq": 6, "type": "ThankYou",'
        ' "output": {"text": "Thanks!", "text": "Pay again"}}\n'
    )
    with pytest.raises(CassetteError) as refused:
        CassettePlayer(cassette)
    assert str(refused.value) == (
        f"{cassette}:2: not a cassette entry (output.text: the key `text` {WHY})"
    )
    result = invoke(
        "run", str(PAYMENT), "--input", ORDER, "--cassette", str(cassette),
        "--db", str(tmp_path / "t.db"),
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        f"error: CassetteError: {cassette}:2: not a cassette entry (output.text: the key"
        f" `text` {WHY})"
    ]
    assert threads_in(tmp_path / "t.db") == []


def test_graph_refuses_an_event_log_that_gives_a_key_twice(tmp_path: Path) -> None:
    events = tmp_path / "events.json"
    events.write_text('[{"kind": "started", "step": "bill", "kind": "finished"}]')
    result = invoke("graph", str(PAYMENT), "--events", str(events))
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: {events}: 0.kind: the key `kind` {WHY}\n"
