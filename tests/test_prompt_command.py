"""`twelvefold prompt`: the exact request of an llm step, for a fresh or a stored thread."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.generated import EXAMPLES
from twelvefold.cli import cli
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.cassette import CassettePlayer
from twelvefold.runtime.notify import LogNotifier
from twelvefold.runtime.store import SqliteStore

DEPLOYBOT = str(EXAMPLES / "deploybot.agent")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def prompt(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(cli, ["prompt", DEPLOYBOT, "decide", *args, "--json"])
    assert result.exit_code == 0, result.output
    body: dict[str, object] = json.loads(result.stdout)
    return body


def test_a_fresh_thread_shows_the_prompt_file_and_the_schema() -> None:
    body = prompt("--input", "deploy v1.2.3 to production")
    assert body["model"] == "gpt-4o-mini"  # the step's `model`
    messages = body["messages"]
    assert isinstance(messages, list)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == (
        "<user_input>deploy v1.2.3 to production</user_input>\n\nWhat is the next step?"
    )
    (tool,) = body["tools"]  # type: ignore[misc]
    assert tool["function"]["name"] == "decide"
    assert set(tool["function"]["parameters"]["$defs"]) == {
        "ListGitTags",
        "DeployBackend",
        "RequestMoreInformation",
        "DoneForNow",
    }


def test_json_mode_shows_what_instructor_adds() -> None:
    body = prompt("--input", "hi", "--mode", "json", "--model", "local-model")
    assert body["model"] == "local-model"
    assert body["response_format"] == {"type": "json_object"}
    assert "json_schema" in body["messages"][0]["content"]  # type: ignore[index]


def test_a_stored_thread_shows_its_rejection_in_the_context(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    cassette.write_text(
        "\n".join(
            json.dumps({"agent": "deploybot", "step": "decide", "seq": seq, **answer})
            for seq, answer in [
                (1, {"type": "ListGitTags", "output": {}}),
                (4, {"type": "DeployBackend", "output": {"tag": "v1.2.3", "env": "production"}}),
                (7, {"type": "RequestMoreInformation", "output": {"question": "Staging?"}}),
            ]
        )
    )
    db = tmp_path / "threads.db"
    store = SqliteStore(db)
    quiet = LogNotifier(io.StringIO())
    with Runtime(store, model=CassettePlayer(cassette), notifier=quiet) as runtime:
        waiting = runtime.launch(DEPLOYBOT, "deploy v1.2.3 to production")
        asking = runtime.resume(
            waiting.id, request=waiting.request, reject=True, by="carol", comment="staging first"
        )
        assert asking.step == "ask_user"
    store.close()

    body = prompt("--thread", asking.id, "--db", str(db))
    user = body["messages"][1]["content"]  # type: ignore[index]
    assert "<list_tags_result>tags: [v1.2.3, v1.2.2, v1.2.1]</list_tags_result>" in user
    assert "<approve_deploy_rejected>\nby: carol\ncomment: staging first\n" in user


def test_a_step_that_is_not_an_llm_step_is_refused() -> None:
    result = CliRunner().invoke(cli, ["prompt", DEPLOYBOT, "deploy", "--input", "x"])
    assert result.exit_code == 2
    assert "not an llm step" in result.output and "decide" in result.output


def test_an_agent_that_does_not_compile_shows_its_diagnostics_on_lines_of_their_own(
    tmp_path: Path,
) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "p.j2").write_text("{{ last.__class__ }}\n")
    agent = tmp_path / "broken.agent"
    agent.write_text(
        "agent a { start decide max_steps 5 }\ntype Done { message: string }\n"
        'llm decide -> Done {\n  prompt "p.j2"\n  on Done -> done\n}\nfinal done(Done)\n'
    )
    result = CliRunner().invoke(cli, ["prompt", str(agent), "decide", "--input", "x"])
    assert result.exit_code != 0
    assert "\\n" not in result.output  # a line break, not the two characters
    lines = result.output.splitlines()
    assert any("error[E704]" in line for line in lines)
    assert any(line.strip().startswith("= help:") for line in lines)


FIELDS_NAMED_AS_METHODS = """\
agent orders {
  input Order
  max_steps 4
  start s
}
type Order { items: list[string], keys: string, get: string, pop: string, copy: string }
type Done { ok: bool }
llm s -> Done {
  prompt "s.j2"
  on Done -> done
}
final done(Done)
"""


def test_a_field_named_like_a_dict_method_is_read_as_the_field(tmp_path: Path) -> None:
    """A red team (rt13): `{% for line in input.items %}` passed `check` (a field of the
    record) and every run failed, the template reading the dict's `items` method (`pop`:
    a `SecurityError`)."""
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "s.j2").write_text(
        "{% for line in input.items %}- {{ line }}\n{% endfor %}"
        "{{ input.keys }} {{ input.get }} {{ input.pop }} {{ input.copy }}\n"
    )
    agent = tmp_path / "orders.agent"
    agent.write_text(FIELDS_NAMED_AS_METHODS)
    assert CliRunner().invoke(cli, ["check", str(agent)]).exit_code == 0
    order = {"items": ["book", "pen"], "keys": "K", "get": "G", "pop": "P", "copy": "C"}
    result = CliRunner().invoke(
        cli, ["prompt", str(agent), "s", "--input", json.dumps(order), "--json"]
    )
    assert result.exit_code == 0, result.output
    (message,) = [m for m in json.loads(result.stdout)["messages"] if m["role"] == "user"]
    assert "- book\n- pen\nK G P C" in message["content"], message
