"""Client-side rate limits (runtime/ratelimit.py; docs/runtime.md "Rate limits"): the real
openai + instructor client against the scripted server on loopback, which notes when each
request arrived. No durations are asserted: the server's arrivals are counted per window,
with a bound generous enough for a loaded machine (twice the limit) that an unlimited
burst still breaks it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_helpers import RecordingNotifier
from tests.support.openai_server import Reply, ScriptedOpenAI
from twelvefold.runtime.api import AsyncRuntime
from twelvefold.runtime.config import Config, ConfigError
from twelvefold.runtime.model import OpenAIModel
from twelvefold.runtime.ratelimit import (
    PROCESS_IN_FLIGHT,
    InFlight,
    Limits,
    RateLimits,
    WindowLimiter,
    retry_after,
)
from twelvefold.runtime.store import MemoryStore, SqliteStore

WINDOW = 2.0
"""Seconds: the limiter's window in these tests (a minute in production)."""
THREADS = 8

AGENT = """
agent answerer { input string  start decide }
type Done { message: string }
llm decide -> Done {
  prompt "decide.j2"
  on Done -> done
}
final done(Done)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "prompts").mkdir()
    # About 100 characters: the limiter's estimate of a call (4 characters a token) is
    # near the 18 tokens the scripted server reports for it.
    (tmp_path / "prompts" / "decide.j2").write_text(
        "Answer the question below in one short sentence, please.\n{{ context }}\n"
    )
    (tmp_path / "answerer.agent").write_text(AGENT)
    return tmp_path


def most_in_one_window(arrivals: list[float], window: float = WINDOW) -> int:
    """The most requests the server saw within any one window."""
    times = sorted(arrivals)
    return max(
        (sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times)),
        default=0,
    )


def run_burst(
    server: ScriptedOpenAI, project: Path, limiter: WindowLimiter | None, *, retries: int = 0
) -> list[str]:
    """Launch THREADS threads at once in one runtime; their statuses."""
    server.responder = lambda body: Reply(arguments={"message": "ok"})

    async def burst() -> list[str]:
        model = OpenAIModel(
            model="limited-model", base_url=server.base_url, api_key="t", transport_retries=retries
        )
        runtime = AsyncRuntime(
            SqliteStore(project / "t.db"), model=model, notifier=RecordingNotifier()
        )
        if limiter is not None:
            runtime.engine.rate_limiter = model.limiter = limiter
        # The first call in a process imports and builds the client (a second or more on
        # a loaded machine) after its turn was given: done first, so that a turn and its
        # request arrive together, as they do in a process that has warmed up.
        await model._client_of_this_loop()
        views = await asyncio.gather(
            *(runtime.launch(project / "answerer.agent", f"q{i}") for i in range(THREADS))
        )
        await model.aclose()
        return [view.status for view in views]

    return asyncio.run(burst())


@pytest.mark.parametrize(
    "limit",
    ["requests_per_minute = 2", "tokens_per_minute = 30"],  # 18 tokens a reply: 2 calls
)
def test_calls_to_a_limited_model_are_spread_over_windows(
    openai_server: ScriptedOpenAI, project: Path, limit: str
) -> None:
    (project / "twelvefold.toml").write_text(f'[rate_limits."limited"]\n{limit}\n')
    statuses = run_burst(openai_server, project, WindowLimiter(window_seconds=WINDOW))
    assert statuses == ["finished"] * THREADS
    assert len(openai_server.arrivals) == THREADS
    assert most_in_one_window(openai_server.arrivals) <= 4  # 2 per window, doubled


def test_without_a_limit_the_same_burst_arrives_at_once(
    openai_server: ScriptedOpenAI, project: Path
) -> None:
    """The counting above can fail: an unlimited model gets the whole burst together."""
    (project / "twelvefold.toml").write_text(
        '[rate_limits."other-model"]\nrequests_per_minute = 1\n'
    )
    statuses = run_burst(openai_server, project, WindowLimiter(window_seconds=WINDOW))
    assert statuses == ["finished"] * THREADS
    assert most_in_one_window(openai_server.arrivals) > 4


def test_a_429_is_retried_once_by_the_client_and_pauses_the_model_for_everyone(
    openai_server: ScriptedOpenAI, project: Path
) -> None:
    (project / "twelvefold.toml").write_text(
        '[rate_limits."limited-model"]\nrequests_per_minute = 100\n'
    )
    openai_server.script.append(Reply(status=429, error="slow down", retry_after="30"))
    limiter = WindowLimiter(window_seconds=WINDOW)
    openai_server.responder = lambda body: Reply(arguments={"message": "ok"})

    async def one() -> str:
        model = OpenAIModel(
            model="limited-model", base_url=openai_server.base_url, api_key="t",
            transport_retries=1,
        )  # fmt: skip
        runtime = AsyncRuntime(
            SqliteStore(project / "t.db"), model=model, notifier=RecordingNotifier()
        )
        runtime.engine.rate_limiter = model.limiter = limiter
        # The openai client waits out Retry-After itself (up to a minute): shortened here
        # by asking the 429 for 30 s but letting the client see 0.5 s would need a header
        # it reads first, `retry-after-ms`.
        view = await runtime.launch(project / "answerer.agent", "q")
        await model.aclose()
        return view.status

    openai_server.script[0] = Reply(status=429, error="slow down", retry_after="1")
    assert asyncio.run(one()) == "finished"
    assert len(openai_server.requests) == 2, "one 429, one retry by the client: no other"
    assert limiter.paused_for("limited-model") >= 0  # the pause was taken (and has passed)
    assert limiter.paused_for("other-model") == 0


def test_limits_are_read_as_whole_numbers_and_matched_like_prices() -> None:
    limits = RateLimits.of(
        Config(settings={"rate_limits": {"gpt-4o": {"requests_per_minute": 60}}})
    )
    assert limits.of_model("gpt-4o-2024-08-06") == Limits(requests=60)
    assert limits.of_model("gpt-4.1") is None
    for bad in ({"requests_per_minute": 0}, {"requests_per_minute": 1.5}, {"rpm": 3}, 3):
        with pytest.raises(ConfigError, match=r"rate_limits\.m"):
            RateLimits.of(Config(settings={"rate_limits": {"m": bad}}))


def test_retry_after_reads_seconds_milliseconds_and_dates() -> None:
    assert retry_after({"retry-after": "7"}) == 7
    assert retry_after({"retry-after-ms": "250", "retry-after": "7"}) == 0.25
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None
    for endless in ("inf", "-inf", "nan", "1e999"):  # a wait with no end is malformed
        assert retry_after({"retry-after-ms": endless}) is None
        assert retry_after({"retry-after-ms": endless, "retry-after": "3"}) == 3
        assert retry_after({"retry-after": endless}) is None


def test_a_server_thread_waiting_for_its_turn_lends_its_slot_to_another(
    openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    """`--concurrency 1`: a thread of a model limited to one call per (long) window waits
    for its turn; a thread of another model still runs to the end meanwhile."""

    async def then(service: Any, ana: Any, status: Any, second: str) -> None:
        other = (await service.launch(ana, "free", "q3")).id
        await until(lambda: _is(status(other), "finished"), "the other model's thread")
        assert await status(second) == "running"
        assert service.runner.in_flight == 0 and service.runner.rate_limited == 1

    waiting_for_a_turn(openai_server, tmp_path, then)


def limited_and_free(tmp_path: Path) -> list[Path]:
    """Two agents' folders: `limited` (its model: one call per window) and `free`."""
    folders = []
    for name, config in (("limited", '[rate_limits."limited-model"]\nrequests_per_minute = 1\n'),
                         ("free", "")):  # fmt: skip
        folder = tmp_path / name
        (folder / "prompts").mkdir(parents=True)
        (folder / "prompts" / "decide.j2").write_text("{{ context }}\n")
        agent = AGENT.replace("answerer", name).replace(
            'prompt "decide.j2"', f'prompt "decide.j2"\n  model "{name}-model"'
        )
        (folder / f"{name}.agent").write_text(agent)
        (folder / "twelvefold.toml").write_text(config)
        folders.append(folder)
    return folders


def waiting_for_a_turn(openai_server: ScriptedOpenAI, tmp_path: Path, then: Any) -> None:
    """Serve `limited` and `free` with `--concurrency 1` and a 600 s window; run a
    `limited` thread to the end, launch a second (it waits for its turn), then await
    `then(service, ana, status, second)`."""
    from tests.support.server import served

    folders = limited_and_free(tmp_path)
    openai_server.responder = lambda body: Reply(arguments={"message": "ok"})

    async def scenario() -> None:
        async with served(folders, tmp_path / "t.db", openai_server, concurrency=1) as s:
            s.service.runtime.engine.rate_limiter = WindowLimiter(window_seconds=600)
            service, ana = s.service, s.caller("ana")

            async def status(thread: str) -> str:
                return (await service.view(ana, thread)).status

            first = (await service.launch(ana, "limited", "q1")).id
            await until(lambda: _is(status(first), "finished"), "the first limited thread")
            second = (await service.launch(ana, "limited", "q2")).id
            await until(lambda: _true(service.runner.rate_limited == 1), "the turn to be waited")
            await then(service, ana, status, second)

    asyncio.run(scenario())


async def until(condition: Any, what: str) -> None:
    for _ in range(1200):  # a generous bound (about a minute), not a duration asserted
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)


async def _true(value: bool) -> bool:
    return value


# ---- the cap on model calls in flight (`model_calls_in_flight`) ---------------------------

BURST = 12


def run_slow_burst(server: ScriptedOpenAI, project: Path) -> list[str]:
    """BURST threads launched at once in one runtime against a model that answers after
    0.2 s; their statuses."""
    server.responder = lambda body: Reply(arguments={"message": "ok"})
    server.latency = 0.2

    async def burst() -> list[str]:
        model = OpenAIModel(model="any-model", base_url=server.base_url, api_key="t")
        runtime = AsyncRuntime(
            SqliteStore(project / "t.db"), model=model, notifier=RecordingNotifier()
        )
        await model._client_of_this_loop()  # built before the burst, as in a warmed-up process
        views = await asyncio.gather(
            *(runtime.launch(project / "answerer.agent", f"q{i}") for i in range(BURST))
        )
        await model.aclose()
        return [view.status for view in views]

    return asyncio.run(burst())


def test_no_more_model_calls_than_the_cap_are_in_flight_and_the_rest_wait(
    openai_server: ScriptedOpenAI, project: Path
) -> None:
    """12 threads at once under `model_calls_in_flight = 3`: the server never answers more
    than 3 completions at once, and every thread finishes (waiting for a place is not a
    failure)."""
    (project / "twelvefold.toml").write_text("model_calls_in_flight = 3\n")
    assert run_slow_burst(openai_server, project) == ["finished"] * BURST
    assert len(openai_server.requests) == BURST
    assert openai_server.most_in_flight <= 3


def test_under_the_default_cap_the_same_burst_is_in_flight_together(
    openai_server: ScriptedOpenAI, project: Path
) -> None:
    """The counting above can fail: under the default cap (100) the burst is answered side
    by side."""
    (project / "twelvefold.toml").write_text("")
    assert run_slow_burst(openai_server, project) == ["finished"] * BURST
    assert openai_server.most_in_flight > 3


def test_the_cap_is_a_whole_number_from_one_to_the_bound() -> None:
    assert RateLimits.of(Config(settings={})).in_flight == 100
    assert RateLimits.of(Config(settings={"model_calls_in_flight": 8})).in_flight == 8
    assert RateLimits.of(Config(settings={"model_calls_in_flight": 100_000})).in_flight == 100_000
    for bad in (0, -1, 2.5, True, "8", 100_001, 10**30):
        with pytest.raises(ConfigError, match="model_calls_in_flight"):
            RateLimits.of(Config(settings={"model_calls_in_flight": bad}))


# ---- a model call's deadline (`model_call_timeout`) -----------------------------------------


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_reply_that_never_ends_fails_the_step_at_the_deadline_and_frees_its_place(
    openai_server: ScriptedOpenAI, project: Path, store: str
) -> None:
    """An endpoint dripping its reply a byte at a time (each byte restarts the openai
    client's read timeout): under `model_call_timeout = 1` the step fails with
    `APITimeoutError`, and the call's place among those in flight is given back. Both the
    synchronous path (a `MemoryStore`) and the ordinary one (SQLite)."""
    (project / "twelvefold.toml").write_text("model_call_timeout = 1\n")
    openai_server.responder = lambda body: Reply(arguments={"message": "ok"}, drip=0.2)

    async def launch() -> tuple[str, list[Any]]:
        model = OpenAIModel(model="any-model", base_url=openai_server.base_url, api_key="t")
        kept = MemoryStore() if store == "memory" else SqliteStore(project / "t.db")
        runtime = AsyncRuntime(kept, model=model, notifier=RecordingNotifier())
        try:
            # Generous: fails here, not by hanging the suite, if there were no deadline.
            view = await asyncio.wait_for(runtime.launch(project / "answerer.agent", "q"), 60)
            return view.status, await runtime.events(view.id)
        finally:
            await model.aclose()

    status, events = asyncio.run(launch())
    assert status == "failed"
    failed = events[-1]
    assert failed.error.type == "APITimeoutError"
    assert "within 1 s (model_call_timeout" in failed.error.message
    assert PROCESS_IN_FLIGHT.running == 0


def test_the_deadline_is_a_number_of_seconds_within_a_day() -> None:
    assert RateLimits.of(Config(settings={})).call_seconds == 600.0
    assert RateLimits.of(Config(settings={"model_call_timeout": 2.5})).call_seconds == 2.5
    for bad in (0, -1, True, "8", float("nan"), float("inf"), 86_401):
        with pytest.raises(ConfigError, match="model_call_timeout"):
            RateLimits.of(Config(settings={"model_call_timeout": bad}))


def test_a_waiter_cancelled_as_its_place_comes_passes_the_place_on() -> None:
    """A call cancelled while it waits (its thread stopped) never keeps a place: the cap's
    count ends at zero and the other waiters all get theirs."""
    cap = InFlight(1)

    async def scenario() -> None:
        await cap.enter()
        waiters = [asyncio.create_task(cap.enter()) for _ in range(3)]
        await asyncio.sleep(0)
        waiters[0].cancel()
        cap.leave()  # the place goes to waiter 0, cancelled: it passes on to waiter 1
        await asyncio.wait_for(waiters[1], timeout=30)
        cap.leave()
        await asyncio.wait_for(waiters[2], timeout=30)
        cap.leave()

    asyncio.run(scenario())
    assert cap.running == 0 and cap.most == 1


def test_a_server_thread_waiting_for_its_turn_can_be_cancelled_at_once(
    openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    """A cancel does not wait for the turn (up to 10 minutes) to get the thread's lease:
    the wait is stopped (no call had started), the cancel recorded, and the slot the
    wait lent is not taken again (another thread still runs with `--concurrency 1`)."""

    async def then(service: Any, ana: Any, status: Any, second: str) -> None:
        asked = len(openai_server.requests)
        view = await service.cancel(ana, second, reason="not now")
        assert view.status == "cancelled"
        await until(lambda: _true(second not in service._tasks), "the run to stop")
        assert len(openai_server.requests) == asked  # no call was made for it
        assert service.runner.rate_limited == service.runner.in_flight == 0
        other = (await service.launch(ana, "free", "q3")).id
        await until(lambda: _is(status(other), "finished"), "a thread after the cancel")
        assert service._slots._value == 1  # the one slot, neither lost nor doubled

    waiting_for_a_turn(openai_server, tmp_path, then)


@pytest.mark.parametrize("kept", ["sqlite", "memory"])  # memory: the synchronous path's call
def test_a_429_asking_longer_than_the_client_waits_is_waited_out_and_called_again(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch, kept: str
) -> None:
    """The openai client does not retry a 429 whose `Retry-After` is over two minutes at
    all: the loop waits (capped at `MAX_PAUSE_SECONDS`, shortened here so the test does not
    wait ten minutes; the header asks for 300 s) and calls again. Nothing is recorded for
    the 429: the step succeeds."""
    import twelvefold.runtime.loop as loop

    monkeypatch.setattr(loop, "MAX_PAUSE_SECONDS", 0.5, raising=False)
    openai_server.script.append(Reply(status=429, error="slow down", retry_after="300"))
    openai_server.responder = lambda body: Reply(arguments={"message": "ok"})

    async def one() -> list[Any]:
        model = OpenAIModel(
            model="any-model", base_url=openai_server.base_url, api_key="t", transport_retries=2
        )
        store = SqliteStore(project / "t.db") if kept == "sqlite" else MemoryStore()
        runtime = AsyncRuntime(store, model=model, notifier=RecordingNotifier())
        view = await runtime.launch(project / "answerer.agent", "q")
        await model.aclose()
        assert view.status == "finished", view
        return await runtime.events(view.id)

    events = asyncio.run(one())
    assert len(openai_server.requests) == 2, "the 429 (not retried by the client), then ours"
    assert [type(e).__name__ for e in events].count("StepFailed") == 0


def test_a_429_that_keeps_asking_for_long_waits_fails_the_step_after_the_last(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import twelvefold.runtime.loop as loop

    monkeypatch.setattr(loop, "MAX_PAUSE_SECONDS", 0.2)
    openai_server.responder = lambda body: Reply(status=429, error="slow", retry_after="900")

    async def one() -> Any:
        model = OpenAIModel(model="any-model", base_url=openai_server.base_url, api_key="t")
        runtime = AsyncRuntime(
            SqliteStore(project / "t.db"), model=model, notifier=RecordingNotifier()
        )
        view = await runtime.launch(project / "answerer.agent", "q")
        await model.aclose()
        return view

    view = asyncio.run(one())
    assert view.status == "failed" and view.error.type == "RateLimitError"
    assert len(openai_server.requests) == 1 + loop.LONG_429_WAITS
