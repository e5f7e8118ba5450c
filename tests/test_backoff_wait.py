"""A tool retry's backoff as a user meets it: Ctrl-C during the wait in `twelvefold run`
(a real process and a real SIGINT), and when the next try is due in `show` (text and
--json), the HTTP API and the thread page (the real service and app, httpx in process).

The agent calls one tool first thing (no model), which fails its first attempt with a
hostile message (HTML, Jinja2, a terminal escape, a right-to-left override) and
succeeds after; `retry 2 backoff D` tries it again D later.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

from tests.support.inbox import HOSTILE, signed_in
from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import served
from tests.support.waiting import wait_for
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.store import SqliteStore, StoreNotFound
from twelvefold.runtime.types import AttemptFailed, ToolResult, ToolStarted
from twelvefold.server.inbox import visible
from twelvefold.server.service import Caller

AGENT = """\
# backoff.agent: a tool that fails once and is tried again after a backoff.
agent backoff "Fetches a page from a flaky host." {
  input string
  start fetch
}

type Page { text: string }

tool fetch -> Page = "backoff_tools:fetch" {
  next done
  retry 2 backoff BACKOFF
}

final done(Page)
"""

TOOLS = """\
import os
from pathlib import Path


def fetch() -> dict[str, str]:
    attempts = Path(os.environ["BACKOFF_DIR"]) / "attempts"
    tried = attempts.read_text() if attempts.exists() else ""
    attempts.write_text(tried + "x")
    if not tried:
        raise ConnectionError(os.environ["BACKOFF_ERROR"])
    return {"text": "ok"}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder with backoff.agent (a 1 h backoff unless a test rewrites it) and its tool;
    BACKOFF_DIR and BACKOFF_ERROR set for this process and the ones it starts."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "backoff.agent").write_text(AGENT.replace("BACKOFF", "1h"))
    (folder / "backoff_tools.py").write_text(TOOLS)
    monkeypatch.setenv("BACKOFF_DIR", str(folder))
    monkeypatch.setenv("BACKOFF_ERROR", HOSTILE)
    monkeypatch.setenv("TWELVEFOLD_DB", "")
    monkeypatch.delenv("TWELVEFOLD_STORE", raising=False)
    yield folder


def twelvefold(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twelvefold", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
    )


def events_of(db: Path, thread_id: str | None = None) -> list[Any]:
    """The log of `thread_id` (else of the store's only thread); [] before it exists."""
    if not db.exists():
        return []
    try:
        store = SqliteStore(db, create=False)
    except StoreNotFound:  # made, its schema not written yet: `run` is starting
        return []
    try:
        found = thread_id or next((t.id for t in store.threads()), None)
        return [] if found is None else Runtime(store).events(found)
    finally:
        store.close()


def only_thread(db: Path) -> str:
    store = SqliteStore(db, create=False)
    try:
        (info,) = store.threads()
        return info.id
    finally:
        store.close()


def normalized(retry_at: str) -> str:
    """The form views give times in (UTC, microseconds, `Z`)."""
    moment = datetime.fromisoformat(retry_at)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


# ---- Ctrl-C during the backoff --------------------------------------------------------


def test_ctrl_c_during_a_backoff_exits_130_with_one_line_and_resume_retries(
    project: Path,
) -> None:
    """SIGINT while `run` waits out a retry's backoff: exit 130, one line on stderr naming
    the thread, its next try and how to run it on (no "Aborted!", no traceback, no
    asyncio warning); the failed attempt is in the log, the lease is let go, and `resume`
    makes the next attempt with the same key and finishes the thread."""
    (project / "backoff.agent").write_text(AGENT.replace("BACKOFF", "6s"))
    db = project / ".twelvefold" / "threads.db"
    running = subprocess.Popen(
        [sys.executable, "-m", "twelvefold", "run", "backoff.agent", "--input", "go"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        wait_for(
            lambda: any(isinstance(e, AttemptFailed) for e in events_of(db)),
            "the failed attempt to be recorded",
        )
        running.send_signal(signal.SIGINT)
        out, err = running.communicate(timeout=120)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    thread_id = only_thread(db)
    log = events_of(db, thread_id)
    # The interrupt landed during the backoff: no second attempt was started.
    assert [type(e) for e in log[1:]] == [ToolStarted, AttemptFailed], log
    failed = log[-1]
    assert running.returncode == 130, (out, err)
    assert err.splitlines() == [
        f"interrupted: thread {thread_id} stopped at `fetch`, its next try due at "
        f"{normalized(failed.retry_at)}; nothing is lost: `twelvefold resume {thread_id}` "
        "runs it on"
    ], err
    store = SqliteStore(db, create=False)
    try:
        assert store.lease(thread_id) is None, "the interrupted run kept its lease"
        assert store.info(thread_id).status == "running"
    finally:
        store.close()

    resumed = twelvefold(project, "resume", thread_id)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr == ""
    log = events_of(db, thread_id)
    started = [e for e in log if isinstance(e, ToolStarted)]
    assert len(started) == 2 and started[0].key == started[1].key == failed.key
    assert isinstance(log[-1], ToolResult)
    assert (project / "attempts").read_text() == "xx"
    assert f"thread {thread_id} (backoff) finished" in resumed.stdout
    shown = json.loads(twelvefold(project, "show", thread_id, "--json").stdout)
    assert (shown["status"], shown["retry_at"]) == ("finished", None)  # no try is due now


# ---- when the next try is due: show, the API, the thread page --------------------------


def paused_in_backoff(project: Path) -> tuple[str, AttemptFailed]:
    """A thread of backoff.agent in project/.twelvefold/threads.db, stopped in its 1 h
    backoff as `serve` stops one (the run holds nothing while it waits); its id and the
    failed attempt."""
    db = project / ".twelvefold" / "threads.db"
    db.parent.mkdir()
    store = SqliteStore(db)
    with Runtime(store) as rt:
        rt.aio.engine.wait_out_backoff = False
        view = rt.launch(project / "backoff.agent", "go")
    store.close()
    assert view.status == "running" and view.retry_at is not None
    failed = view.log[-1]
    assert isinstance(failed, AttemptFailed)
    return view.id, failed


def test_show_says_when_the_next_try_is_due_and_why(project: Path) -> None:
    thread_id, failed = paused_in_backoff(project)
    due = normalized(failed.retry_at)
    shown = twelvefold(project, "show", thread_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert f"thread {thread_id} (backoff) is running at `fetch`" in lines
    (line,) = [line for line in lines if line.startswith("  next try: ")]
    assert line.startswith(f"  next try: {due} (attempt 1 failed: ConnectionError: ")
    # The tool's message is data: its terminal escape and direction override are shown.
    assert "\x1b" not in shown.stdout and "\u202e" not in shown.stdout
    assert "\\u001b[31m\\u202eevil)" in line

    data = json.loads(twelvefold(project, "show", thread_id, "--json").stdout)
    assert data["retry_at"] == due
    assert data["log"][-1]["kind"] == "attempt_failed"


@pytest.mark.anyio
@pytest.mark.usefixtures("collected")
async def test_the_api_and_the_thread_page_say_when_the_next_try_is_due(
    project: Path, tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    """The server stops a run at a backoff (a timer runs it on at the due time): meanwhile
    the thread's JSON carries `retry_at`, and its page says when and why, escaped."""
    async with served(project / "backoff.agent", tmp_path / "threads.db", openai_server) as s:
        bob = Caller("bob", "http")
        launched = await s.service.launch(bob, "backoff", "go")
        view = await s.service.wait(bob, launched.id, 60)
        failed = view.log[-1]
        assert view.status == "running" and isinstance(failed, AttemptFailed), view
        due = normalized(failed.retry_at)
        async with s.client("bob") as client:
            got = await client.get(f"/v1/threads/{view.id}")
        assert got.status_code == 200, got.text
        assert got.json()["retry_at"] == due
        async with signed_in(s, "bob") as browser:
            page = await browser.get(f"/threads/{view.id}")
        assert page.status_code == 200, page.text
        shown = f"{due} (attempt 1 failed: ConnectionError: {visible(HOSTILE)})"
        assert f'<dd id="retry">{escape(shown)}</dd>' in page.text
        assert "<script>window.pwned" not in page.text
