"""The configuration the loop reads lazily (rate limits, `model_call_timeout`, prices) is
checked before a thread exists: a bad value is one line and exit 1 from `run`, and
`serve` and `worker` (through `served_agents`) refuse to start, instead of a
stored thread failing at its first model step (or every served thread failing)."""

from __future__ import annotations

import shutil
import tomllib
from datetime import UTC
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.runtime_helpers import EXAMPLES
from twelvefold.cli import cli
from twelvefold.runtime.api import AsyncRuntime
from twelvefold.runtime.config import toml_text
from twelvefold.runtime.store import MemoryStore
from twelvefold.server.service import ServeError, served_agents

BAD = [
    "model_call_timeout = -1",
    'model_call_timeout = "600"',
    "model_call_timeout = nan",
    "model_call_timeout = inf",
    "model_call_timeout = 0",
    "model_call_timeout = 86401",
    "model_call_timeout = true",
    "model_call_timeout = [1]",
    "model_calls_in_flight = 0",
    "rate_limits = 3",
    'prices = { "gpt-4o" = { input = -1, output = 1 } }',
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(EXAMPLES, tmp_path / "p")
    shutil.copytree(EXAMPLES.parent / "prompts", tmp_path / "p" / "prompts")
    monkeypatch.chdir(tmp_path / "p")
    monkeypatch.delenv("TWELVEFOLD_DB", raising=False)
    monkeypatch.delenv("TWELVEFOLD_STORE", raising=False)
    return tmp_path / "p"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("setting", BAD)
def test_run_refuses_a_bad_setting_before_the_thread_exists(project: Path, setting: str) -> None:
    (project / "twelvefold.toml").write_text(setting + "\n")
    code, _, err = invoke(
        "run", "deploybot.agent", "--input", "x", "--db", "t.db",
        "--cassette", str(project / "cassettes" / "deploybot.jsonl"),
    )  # fmt: skip
    assert code == 1, err
    assert err.startswith(f"error: {project / 'twelvefold.toml'}: "), err
    assert len(err.splitlines()) == 1, err
    assert not (project / "t.db").exists()  # no thread, and no store either


def test_serve_and_worker_refuse_to_start_on_a_bad_setting(project: Path) -> None:
    """`served_agents` is where both commands load what they serve (the refusal is
    `error: ...` and exit 1 there); called directly so that a build that does not refuse
    fails here instead of starting a server that never returns."""
    (project / "twelvefold.toml").write_text("model_call_timeout = -1\n")
    runtime = AsyncRuntime(MemoryStore())
    with pytest.raises(ServeError) as refused:
        served_agents(runtime, [project / "deploybot.agent"])
    assert "model_call_timeout" in str(refused.value)
    assert "\n" not in str(refused.value)


# ---- values quoted as TOML spells them -------------------------------------------------

SPELLED = [
    ("model_call_timeout = true", "not true"),
    ('model_call_timeout = "600"', 'not "600"'),
    ("model_call_timeout = [1, 2.5, 'x']", 'not [1, 2.5, "x"]'),
    ("model_call_timeout = { a = 1, 'b c' = false }", 'not { a = 1, "b c" = false }'),
    ("model_call_timeout = 1979-05-27", "not 1979-05-27"),
    ("model_call_timeout = -inf", "not -inf"),
    ('model_calls_in_flight = "8"', 'not "8"'),
    ('model_calls_in_flight = "8\\u001b[2J\\nerror: forged"', 'not "8\\u001B[2J\\nerror: forged"'),
    (
        "rate_limits = { gpt = { requests_per_minute = false } }",
        "rate_limits.gpt.requests_per_minute must be a whole number >= 1, not false",
    ),
    (
        'rate_limits = { "gp t" = { tokens_per_minute = 0 } }',
        'rate_limits."gp t".tokens_per_minute',
    ),
    ("prices = { gpt = { input = true, output = 1 } }", "its `input` is true"),
    ("prices = { gpt = { output = 1 } }", "its `input` is missing"),
    ('prices = { "g\\tpt" = { input = -1, output = 1 } }', 'prices."g\\tpt" must be'),
]


@pytest.mark.parametrize(("setting", "shown"), SPELLED)
def test_a_refused_setting_is_quoted_as_toml_spells_it(
    project: Path, setting: str, shown: str
) -> None:
    """Before: `not True`, `not '8'`, `is None` (Python's spelling), and a value's control
    characters reached the message as they were."""
    (project / "twelvefold.toml").write_text(setting + "\n")
    with pytest.raises(ServeError) as refused:
        served_agents(AsyncRuntime(MemoryStore()), [project / "deploybot.agent"])
    assert shown in str(refused.value)
    assert str(refused.value).isprintable()
    code, _, err = invoke("run", "deploybot.agent", "--input", "x", "--db", "t.db")
    assert code == 1 and shown in err and len(err.splitlines()) == 1, err


READER_SPELLED = [
    ('approvers = { ops = "carol" }', 'approvers.ops must be a list of names, not "carol"'),
    ('approvers = { "o\\u202eps" = [1] }', 'approvers."o\\u202Eps" must be'),
    ("tools = { allow_stdlib = 'json' }", 'not "json"'),
    ("retention = { finished_after = 30 }", "not 30"),
    ('retention = { finished_after = "30 days" }', 'not "30 days"'),
    ('retention = { every = "1\\u0000h" }', 'not "1\\u0000h"'),
    ("retention = { delete = 'yes' }", 'not "yes"'),
    ("retention = { archive = 0 }", "not 0"),
    ('retention = { "keep\\nfor" = 1 }', 'unknown retention setting(s): "keep\\nfor"'),
    (
        "[server]\nallow_self_approval = 1",
        "server.allow_self_approval must be true or false, not 1",
    ),
    ("[server]\nlaunchers = [true]", "not [true]"),
    ("[server]\nmetrics = 'open'", 'not "open"'),
    ("tool = 3", "not 3"),
]


@pytest.mark.parametrize(("setting", "shown"), READER_SPELLED)
def test_every_setting_a_server_reads_is_quoted_as_toml_spells_it(
    tmp_path: Path, setting: str, shown: str
) -> None:
    """The readers of the other settings (approvers and tools at `check` and each
    decision, retention at `prune` and on the timer, the server's policy)."""
    from twelvefold.runtime.config import ConfigError, find_config
    from twelvefold.runtime.retention import Retention
    from twelvefold.server.metrics import access
    from twelvefold.server.service import Policy, Unavailable

    if setting == "tool = 3":  # [tool.twelvefold] is not a table
        (tmp_path / "pyproject.toml").write_text("[tool]\ntwelvefold = 3\n")
    else:
        (tmp_path / "twelvefold.toml").write_text(setting + "\n")
    messages = []
    readers = [
        lambda: find_config(tmp_path).approvers,
        lambda: find_config(tmp_path).allow_stdlib,
        lambda: Retention.of(find_config(tmp_path)),
        lambda: Policy.at(tmp_path),
        lambda: access([tmp_path]),
    ]
    for read in readers:
        try:
            read()
        except (ConfigError, Unavailable) as exc:
            messages.append(str(exc))
    assert messages and all(m.isprintable() for m in messages)
    assert any(shown in m for m in messages), messages


TOML_VALUES = st.recursive(
    st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.dates()
    | st.datetimes(timezones=st.sampled_from([None, UTC])),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(TOML_VALUES)
def test_toml_text_is_the_value_as_toml_reads_it(value: object) -> None:
    """Whatever a configuration holds (not too long to quote), `toml_text` is TOML for it:
    reading it back gives the value, and it is one printable line."""
    text = toml_text(value)
    assume(not text.endswith("…"))  # cut short: quoted in part, on purpose
    assert text.isprintable()
    assert tomllib.loads(f"x = {text}")["x"] == value


def test_serve_names_every_bad_setting_of_one_table_or_reader(project: Path) -> None:
    """Several bad settings one reader reads (the server's table; rate limits and the
    model call bounds; prices; retention) are each named at once: before, the reader's
    first one hid the rest, each revealed only at the next start."""
    (project / "twelvefold.toml").write_text(
        "model_calls_in_flight = '8'\nmodel_call_timeout = true\n"
        "[rate_limits]\na = { tokens_per_minute = -1 }\nb = { requests_per_minute = 0 }\n"
        "[prices]\na = { input = -1, output = 1 }\nb = { input = 1, output = -1 }\n"
        "[retention]\nfinished_after = 30\ndelete = 'yes'\n"
        "[server]\nallow_self_approval = 'no'\ndefault_approvers = true\nreaders = [[1]]\n"
    )
    with pytest.raises(ServeError) as refused:
        served_agents(AsyncRuntime(MemoryStore()), [project / "deploybot.agent"])
    problems = refused.value.problems
    for said in [
        "model_calls_in_flight must be",
        "model_call_timeout must be",
        "rate_limits.a.tokens_per_minute must be",
        "rate_limits.b.requests_per_minute must be",
        "prices.a must be",
        "prices.b must be",
        "`retention.finished_after` must be",
        "`retention.delete` must be",
        "server.allow_self_approval must be",
        "server.default_approvers must be",
        "server.readers must be",
    ]:
        assert sum(said in problem for problem in problems) == 1, (said, problems)


def test_a_file_of_a_thousand_bad_settings_is_named_in_a_few_lines(project: Path) -> None:
    """Each of the first thousand settings is read on its own: twenty lines at most say
    so, not a thousand."""
    (project / "twelvefold.toml").write_text(
        "[retention]\n" + "".join(f"k{i} = 1\n" for i in range(3000))
    )
    with pytest.raises(ServeError) as refused:
        served_agents(AsyncRuntime(MemoryStore()), [project / "deploybot.agent"])
    problems = refused.value.problems
    assert len(problems) <= 21  # the file's 20, and the retention timer's (across files)
    assert problems[19].endswith(
        ": at least 981 more problems like these (settings past the first 1,000 were not"
        " read one at a time)"
    ), problems


def test_settings_past_the_first_thousand_are_not_said_to_be_fine(project: Path) -> None:
    """Before: past its first thousand settings a file was not read one at a time, yet
    the last line counted only the thousand (3,000 bad settings: "981 more"), and a bad
    setting there beside one bad before was not named nor hinted at, to be revealed only
    at the next start."""
    groups = "".join(f"g{i} = ['ann']\n" for i in range(1500))
    (project / "twelvefold.toml").write_text("[approvers]\nbad = 1\n" + groups + "late = 2\n")
    with pytest.raises(ServeError) as refused:
        served_agents(AsyncRuntime(MemoryStore()), [project / "deploybot.agent"])
    problems = refused.value.problems
    assert any("approvers.bad must be" in problem for problem in problems), problems
    assert any(
        problem.endswith(
            ": perhaps more problems past its first 1,000 settings (not read one at a time)"
        )
        for problem in problems
    ), problems
