"""Secret fields (issue 12, item 7): `api_key: string secret` is kept in the log for the
reducer and the tools, and is never shown: not in notices (stderr, webhook, Slack, email),
not in `ThreadView.to_json`, `show` or `show --json`, not in the context the model reads,
not in a prompt that prints a record whole. A template that names the field explicitly
(`{{ input.api_key }}`, `{{ api_key }}` in an `ask`) gets it (runtime/redact.py).

The real openai + instructor client against the scripted server, SQLite, the real CLI.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from pathlib import Path
from typing import Annotated, Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict

from tests.runtime_helpers import RecordingNotifier
from tests.support.e2e import ModelTurns
from tests.support.openai_server import Reply, ScriptedOpenAI
from twelvefold.cli import cli
from twelvefold.runtime import SECRET
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.context import build_messages, render_ask
from twelvefold.runtime.notify import EmailNotifier, LogNotifier, SlackNotifier, WebhookNotifier
from twelvefold.runtime.redact import REDACTED, secret_fields, shown_value
from twelvefold.runtime.spec import AgentSpec, StateSpec
from twelvefold.runtime.types import CallModel, Started

FIXTURES = Path(__file__).parent / "checks_fixtures"
VAULT = FIXTURES / "vault.agent"
KEY = "sk-live-7f3a-do-not-show"
CLAIM = {"order": "o-17", "amount": 40.0, "api_key": KEY}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_a_secret_is_in_the_log_and_the_reducer_and_in_no_view(
    rt: Runtime,
    model: ModelTurns,
    openai_server: ScriptedOpenAI,
    notifier: RecordingNotifier,
    tmp_path: Path,
) -> None:
    waiting = rt.launch(VAULT, CLAIM)
    assert (waiting.status, waiting.step) == ("waiting", "review")

    # The log keeps it, and so does the state the reducer computes from the log.
    started = rt.events(waiting.id)[0]
    assert isinstance(started, Started) and started.input.api_key == KEY
    assert rt.replay(waiting.id).input.api_key == KEY
    with sqlite3.connect(tmp_path / "threads.db") as db:
        stored = " ".join(str(row) for row in db.execute("SELECT * FROM events"))
    assert KEY in stored

    # Views: the thread's JSON view and the question it asks.
    assert KEY not in json.dumps(waiting.to_json())
    assert waiting.question == "Refund 40.0 for order o-17?"

    # Every notice channel's rendering of the notice.
    (notice,) = notifier.notices
    assert notice.as_json()["value"]["api_key"] == REDACTED
    stream = io.StringIO()
    asyncio.run(LogNotifier(stream).notify(notice))
    email = EmailNotifier("mail.example", 25, "bot@example.com", ["ana@example.com"])
    shown = [
        stream.getvalue(),
        json.dumps(SlackNotifier("https://hooks.example/x").payload(notice)),
        json.dumps(WebhookNotifier("https://hooks.example/y").payload(notice)),
        email.message(notice).as_string(),
    ]
    assert all(REDACTED in text for text in shown)
    for text in shown:
        assert KEY not in text

    # The model's context, once the approval lets the thread go on.
    model.then(Reply(arguments={"amount": 40, "note": "refunded"}))
    done = rt.resume(waiting.id, request=waiting.request, approve=True, by="ana")
    assert done.status == "finished", done.error
    (request,) = openai_server.requests
    assert KEY not in json.dumps(request)
    assert REDACTED in request["messages"][-1]["content"], "the field shows, its value not"

    # `show` and `show --json`, as a user runs them.
    for extra in ([], ["--json"]):
        result = CliRunner().invoke(
            cli, ["show", waiting.id, "--db", str(tmp_path / "threads.db"), *extra]
        )
        assert result.exit_code == 0, result.output
        assert KEY not in result.output
        assert REDACTED in result.output


def test_a_launch_that_does_not_validate_does_not_echo_a_secret(tmp_path: Path) -> None:
    # pydantic's own message quotes the offending value (`input_value=...`); a secret
    # field's value given in the wrong shape must not come back in the CLI's error.
    bad = json.dumps({**CLAIM, "api_key": {"pin": KEY}})
    result = CliRunner().invoke(
        cli, ["run", str(VAULT), "--input", bad, "--db", str(tmp_path / "threads.db")]
    )
    assert result.exit_code == 1, result.output
    assert "api_key" in result.output and "valid string" in result.output, result.output
    assert KEY not in result.output and "input_value" not in result.output


class Creds(BaseModel):
    user: str
    api_key: Annotated[str, SECRET]


class Claim(BaseModel):
    order: str
    creds: Creds
    token: Annotated[str | None, SECRET] = None


CLAIM_VALUE = Claim(order="o-1", creds=Creds(user="ana", api_key=KEY), token="tok-123")


def test_shown_value_hides_secrets_at_any_depth() -> None:
    assert shown_value(CLAIM_VALUE) == {
        "order": "o-1",
        "creds": {"user": "ana", "api_key": REDACTED},
        "token": REDACTED,
    }
    assert shown_value([CLAIM_VALUE])[0]["creds"]["api_key"] == REDACTED
    # A null secret stays null: that it is missing is not a secret.
    assert shown_value(Claim(order="o", creds=Creds(user="u", api_key="k")))["token"] is None
    assert secret_fields(Creds) == frozenset({"api_key"})
    # The schema and the validation are the declared ones: the marker changes neither.
    assert "api_key" in Creds.model_json_schema()["properties"]
    assert Creds.model_validate({"user": "u", "api_key": "k"}).api_key == "k"


def test_the_log_encoding_keeps_secrets_and_the_shown_encoding_hides_them() -> None:
    codec = Codec()
    codec.types["Claim"] = Claim  # the codec decodes by declared name
    event = Started(step="s", input=CLAIM_VALUE)
    assert KEY in json.dumps(codec.encode_event(event))
    assert KEY not in json.dumps(codec.encode_event(event, redact=True))


def test_an_ask_names_a_secret_explicitly_or_hides_it() -> None:
    assert render_ask("key {{ creds.api_key }}", CLAIM_VALUE) == f"key {KEY}"
    whole = render_ask("{{ creds }}", CLAIM_VALUE)
    assert KEY not in whole and REDACTED in whole


def _spec() -> AgentSpec:
    return AgentSpec(
        name="a",
        description=None,
        source="a.agent",
        start="decide",
        input_type=Claim,
        types={"Claim": Claim, "Creds": Creds},
        states={"decide": StateSpec("llm", line=1, outputs=("Claim",), prompt="p.j2")},
        edges=(),
    )


@pytest.mark.parametrize(
    ("template", "shows_key"),
    [
        ("{{ context }}", False),
        ("{{ input }}", False),
        ("{{ input.creds }}", False),
        ("{{ input | tojson }}", False),
        ("{% for e in events %}{{ e.value }}{% endfor %}", False),
        ("{{ input.creds.api_key }}", True),
        ("{{ last.creds['api_key'] }}", True),
    ],
)
def test_a_prompt_sees_a_secret_only_when_it_names_it(
    tmp_path: Path, template: str, shows_key: bool
) -> None:
    (tmp_path / "p.j2").write_text(template)
    action = CallModel(step="decide", value=CLAIM_VALUE, outputs=(Claim,), prompt="p.j2")
    events: list[Any] = [Started(step="decide", input=CLAIM_VALUE)]
    (message,) = build_messages(_spec(), action, events, tmp_path)
    assert (KEY in message["content"]) is shows_key, message["content"]


class Vault(BaseModel):
    creds: Annotated[dict[str, int], SECRET]
    plain: dict[str, int] = {}
    nested: list[Claim] = []


@pytest.mark.parametrize(
    ("given", "shown", "hidden"),
    [
        ({"creds": {"sk-LIVE-abcdef123456": "x"}}, "creds: ", "sk-LIVE"),
        ({"creds": {}, "nested": [{"order": "o", "creds": {"user": "u", "api_key": 3}}]},
         "nested.0.creds.api_key: ", None),
        ({"creds": {}, "plain": {"some-key": "x"}}, "plain.some-key: ", None),
    ],
)  # fmt: skip
def test_a_problems_path_stops_at_a_secret_field(
    given: dict[str, Any], shown: str, hidden: str | None
) -> None:
    """A secret map's keys are the secret's own data: the path of a problem under a
    secret field stops at the field (the launch and signal errors, CLI and HTTP)."""
    from pydantic import ValidationError

    from twelvefold.runtime.redact import validation_problems

    with pytest.raises(ValidationError) as caught:
        Vault.model_validate(given)
    text = validation_problems(caught.value, model=Vault)
    assert text.startswith(shown), text
    if hidden is not None:
        assert hidden not in text, text
        assert hidden in validation_problems(caught.value), "pydantic's path holds the key"


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid")  # as generated types are

    name: str
    children: list[Node] = []


def test_a_problems_path_under_a_recursive_type_is_shown() -> None:
    """A recursive type is walked once per record (it used to recurse without end)."""
    from pydantic import ValidationError

    from twelvefold.runtime.redact import validation_problems

    with pytest.raises(ValidationError) as caught:
        Node.model_validate({"name": "a", "children": [{"name": "b", "surprise": 1}]})
    assert validation_problems(caught.value, model=Node).startswith("children.0.surprise: ")
