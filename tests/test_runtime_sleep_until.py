"""`sleep NAME(IN) until FIELD`: a durable timer whose end comes from the value.

The sleep ends at the time the field holds (ISO 8601; UTC when it names no zone): an
`expire` sweep before it leaves the thread asleep, one at or after it wakes it; the view
says when. A value that is not a time (hostile or mistaken) ends the sleep at the first
sweep instead of hanging the thread.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime_helpers import ScriptedModel, no_messages
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.store import SqliteStore

AGENT = """
agent later { input Plan start nap }
type Plan { note: string, at: string }
sleep nap(Plan) until at next done
final done(Plan)
"""


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    (tmp_path / "later.agent").write_text(AGENT)
    runtime = Runtime(
        SqliteStore(tmp_path / "t.db"),
        model=ScriptedModel([]),
        messages=no_messages,
        cache_dir=tmp_path / "cache",
    )
    yield runtime
    runtime.close()


def test_the_sleep_ends_at_the_time_the_value_holds(rt: Runtime, tmp_path: Path) -> None:
    view = rt.launch(tmp_path / "later.agent", {"note": "n", "at": "2030-01-02T03:04:05+01:00"})
    assert (view.waiting_for, view.wake_at) == ("timer", "2030-01-02T02:04:05.000000Z")
    assert rt.expire("2030-01-02T02:04:04Z") == []
    assert rt.get(view.id).step == "nap"
    (woken,) = rt.expire("2030-01-02T02:04:05Z")
    assert woken.view is not None and woken.view.step == "done"


def test_a_time_without_a_zone_is_utc(rt: Runtime, tmp_path: Path) -> None:
    view = rt.launch(tmp_path / "later.agent", {"note": "n", "at": "2030-01-02T03:04:05"})
    assert view.wake_at == "2030-01-02T03:04:05.000000Z"


@pytest.mark.parametrize(
    "at",
    [
        "not a time",
        "",
        "9" * 100,
        "2030-13-45T99:00:00Z",
        # times with no UTC form between the years 1 and 9999 (once an OverflowError in
        # `run`, every `show`, and a 500 over HTTP)
        "9999-12-31T23:59:59-10:00",
        "0001-01-01T00:00:00+01:00",
    ],
)
def test_a_value_that_is_no_time_ends_the_sleep_at_the_first_sweep(
    rt: Runtime, tmp_path: Path, at: str
) -> None:
    view = rt.launch(tmp_path / "later.agent", {"note": "n", "at": at})
    assert view.status == "waiting"
    assert rt.get(view.id).wake_at == view.wake_at == rt.events(view.id)[-1].at  # the pause
    (woken,) = rt.expire()
    assert woken.view is not None and woken.view.step == "done"
