"""Tool calls: import by path, typed input, idempotency keys, retries, timeouts, errors."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tests.runtime_helpers import FIXTURES
from twelvefold.runtime import tools
from twelvefold.runtime.types import CallTool


class Count(BaseModel):
    n: int


def run(
    function: str,
    value: Any = None,
    *,
    key: str = "thread:s:3",
    offload: bool = False,
    **options: Any,
) -> tools.Outcome:
    box = tools.ToolBox([FIXTURES])
    attempt = options.pop("attempt", 1)
    action = CallTool(
        step="s", function=f"sample_tools:{function}", value=value, output=Count, **options
    )
    return asyncio.run(
        tools.call(box.resolve(action.function), action, key, offload=offload, attempt=attempt)
    )


def release(*keys: str) -> None:
    """Open the blocking tools' barrier and wait until their abandoned attempts return."""
    sample_module()["barrier"].set()
    for key in keys:
        in_flight = tools._IN_FLIGHT.get(key)
        if in_flight is not None:
            assert in_flight.wait(60), f"the attempt of {key} never returned"
        assert not tools.running(key)


def sample_module() -> Any:
    """The fixture module as the runtime imported it (privately, for FIXTURES' agents)."""
    return tools.ToolBox([FIXTURES]).resolve("sample_tools:keyed").function.__globals__


@pytest.fixture(autouse=True)
def fresh_calls() -> Iterator[None]:
    module = sample_module()
    module["calls"].clear()
    module["barrier"].clear()
    module["most_inside"][0] = 0
    yield
    module["barrier"].set()  # never leave a blocked tool behind


def calls() -> list[Any]:
    return list(sample_module()["calls"])


def test_the_typed_input_and_the_key_are_passed_and_a_dict_becomes_the_output() -> None:
    outcome = run("keyed", Count(n=1))
    assert outcome.result == Count(n=2) and outcome.error is None
    assert calls() == [("keyed", "thread:s:3")]


def test_a_tool_without_parameters_is_called_without_the_input() -> None:
    assert run("no_input", Count(n=5)).result == Count(n=0)


def test_retry_backs_off_exponentially_and_only_the_last_failure_counts() -> None:
    # With a backoff, `call` returns each failed attempt with the wait before the next
    # (the caller records it and waits durably: runtime/loop.py); D, then twice D.
    first = run("flaky", Count(n=7), retries=2, backoff_seconds=0.5)
    assert (first.result, first.attempt, first.retry_in) == (None, 1, 0.5)
    assert str(first.error) == "ConnectionError: cluster unreachable"
    second = run("flaky", Count(n=7), retries=2, backoff_seconds=0.5, attempt=2)
    assert (second.result, second.attempt, second.retry_in) == (None, 2, 1.0)
    third = run("flaky", Count(n=7), retries=2, backoff_seconds=0.5, attempt=3)
    assert third.result == Count(n=7) and third.error is None
    assert len(calls()) == 3


def test_the_last_attempt_fails_the_call_with_no_retry_left() -> None:
    outcome = run("always_fails", Count(n=1), retries=1, backoff_seconds=0.5, attempt=2)
    assert outcome.retry_in is None and str(outcome.error) == "LookupError: no tag 1"


def test_without_a_backoff_the_retries_are_made_at_once() -> None:
    outcome = run("flaky", Count(n=7), retries=2)
    assert outcome.result == Count(n=7) and outcome.retry_in is None
    assert len(calls()) == 3


def test_a_failure_is_its_type_and_a_one_line_message() -> None:
    outcome = run("always_fails", Count(n=1), retries=1)
    assert outcome.result is None
    assert str(outcome.error) == "LookupError: no tag 1"
    flaky = run("flaky", Count(n=1))
    assert str(flaky.error) == "ConnectionError: cluster unreachable"


def test_a_timeout_is_a_failure_and_a_keyless_tool_is_not_tried_again() -> None:
    # `retry 2`: a tool without a key that timed out may have done its work (or still
    # be doing it), so it is never started again automatically.
    outcome = run("slow", Count(n=1), key="t:slow:3", timeout_seconds=0.05, retries=2)
    assert outcome.error is not None and outcome.error.type == "TimeoutError"
    assert "did not return within 0.05s" in outcome.error.message
    assert outcome.unknown
    assert calls() == [("slow",)]
    release("t:slow:3")


def test_a_call_running_on_another_thread_keeps_its_key_from_a_second_attempt() -> None:
    # `call_now` marks its attempt without a lock (`_RunningHere`): a second attempt of
    # the key, here or on a third thread, is refused while it runs; waiting for it ends
    # only once it returned.
    key = "t:here:1"
    first: list[tools.Outcome] = []
    runner = threading.Thread(target=lambda: first.append(run("slow_keyed", Count(n=1), key=key)))
    runner.start()
    module = sample_module()
    for _ in range(6000):  # until the first attempt is inside the tool (at most a minute)
        if key in module["inside"]:
            break
        threading.Event().wait(0.01)
    assert tools.running(key)
    again = run("slow_keyed", Count(n=5), key=key)
    assert again.error is not None and again.error.type == "StillRunning" and again.unknown
    marker = tools._IN_FLIGHT[key]
    assert not marker.wait(0.02)  # still running
    module["barrier"].set()
    assert marker.wait(60)
    runner.join(60)
    assert first[0].result == Count(n=1)
    assert not tools.running(key)
    assert calls() == [("slow_keyed", key)]
    assert module["most_inside"][0] == 1


@pytest.mark.parametrize("offload", [False, True])
def test_abandoned_timed_out_attempts_never_overlap_a_new_attempt_of_the_call(
    offload: bool,
) -> None:
    # Issue 8 item 4: with `timeout` the abandoned attempts kept running while new ones
    # started (three attempts of one payment at once).
    key = f"t:pay:{offload}"
    outcome = run(
        "slow_keyed", Count(n=1), key=key, timeout_seconds=0.05, retries=2, offload=offload
    )
    assert outcome.error is not None and outcome.error.type == "TimeoutError"
    assert outcome.unknown
    assert calls() == [("slow_keyed", key)]  # the first attempt still runs: no second
    assert tools.running(key)
    # A person's retry in this process while it still runs: refused, nothing started.
    again = run("slow_keyed", Count(n=1), key=key, timeout_seconds=0.05)
    assert again.error is not None and again.error.type == "StillRunning" and again.unknown
    assert calls() == [("slow_keyed", key)]
    release(key)
    # Once it returned, the call may be tried again, with the same key.
    assert run("slow_keyed", Count(n=3), key=key, timeout_seconds=5).result == Count(n=3)
    assert calls() == [("slow_keyed", key), ("slow_keyed", key)]
    assert sample_module()["most_inside"][0] == 1


def test_an_async_tool_is_cancelled_at_its_timeout_so_a_keyed_one_is_retried_at_once() -> None:
    outcome = run("hangs_once", Count(n=6), key="t:h:1", timeout_seconds=0.05, retries=1)
    assert outcome.result == Count(n=6)
    assert calls() == [("hangs_once", "t:h:1"), ("hangs_once", "t:h:1")]
    assert not tools.running("t:h:1")


def test_an_async_tool_without_a_key_is_not_retried_after_a_timeout() -> None:
    outcome = run("hangs_once_keyless", Count(n=6), key="t:h:2", timeout_seconds=0.05, retries=1)
    assert outcome.error is not None and outcome.error.type == "TimeoutError" and outcome.unknown
    assert calls() == [("hangs_once_keyless",)]


def test_async_tools_are_awaited() -> None:
    assert run("async_tool", Count(n=4)).result == Count(n=8)


def test_results_of_the_wrong_shape_fail_the_step() -> None:
    assert run("wrong_shape", Count(n=1)).error.type == "ValidationError"  # type: ignore[union-attr]
    error = run("not_a_model", Count(n=1)).error
    assert error is not None and error.message.startswith("returned int, expected Count")


def test_a_tool_that_returned_the_wrong_shape_is_not_run_again() -> None:
    # Issue 8 item 4: `retry 2` ran a tool that succeeded three times because the check
    # of its output sat inside the retry loop.
    outcome = run("wrong_shape", Count(n=1), retries=2)
    assert outcome.error is not None and outcome.error.type == "ValidationError"
    assert outcome.unknown  # it ran: a retry must reuse its key
    assert calls() == [("wrong_shape",)]


@pytest.mark.parametrize(
    ("function", "offload", "timeout", "kind"),
    [
        ("exits", False, None, "SystemExit"),
        ("exits", True, None, "SystemExit"),
        ("exits", False, 5.0, "SystemExit"),
        ("async_exits", False, None, "SystemExit"),
        ("async_exits", False, 5.0, "SystemExit"),
        ("generator_exit", False, None, "GeneratorExit"),
        ("generator_exit", True, 5.0, "GeneratorExit"),
    ],
)
def test_base_exceptions_from_a_tool_are_failures_never_an_exit(
    function: str, offload: bool, timeout: float | None, kind: str
) -> None:
    outcome = run(function, Count(n=1), offload=offload, timeout_seconds=timeout)
    assert outcome.error is not None and outcome.error.type == kind
    assert not outcome.unknown


def test_keyboard_interrupt_in_the_main_thread_stops_the_process_elsewhere_it_is_a_failure() -> (
    None
):
    # In the main thread it is Ctrl-C: it propagates, leaving the call started without a
    # result (the next process treats it as after a crash). On a worker thread only the
    # tool can have raised it: a step failure.
    with pytest.raises(KeyboardInterrupt):
        run("interrupts", Count(n=1), key="t:ki:1")
    assert not tools.running("t:ki:1")
    outcome = run("interrupts", Count(n=1), key="t:ki:2", offload=True)
    assert outcome.error is not None and outcome.error.type == "KeyboardInterrupt"


def test_a_module_that_exits_while_it_loads_is_an_import_error(tmp_path: Path) -> None:
    (tmp_path / "quitting.py").write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(tools.ToolImportError, match=r"cannot import `quitting`.*SystemExit"):
        tools.ToolBox([tmp_path]).resolve("quitting:act")


def test_an_exception_whose_message_cannot_be_read_is_still_described() -> None:
    error = run("unprintable", Count(n=1)).error
    assert error is not None and error.type == "Unprintable"
    assert "could not be read" in error.message


def test_unknown_tools_are_named() -> None:
    box = tools.ToolBox([FIXTURES])
    with pytest.raises(tools.ToolImportError, match="has no function `missing`"):
        box.resolve("sample_tools:missing")
    with pytest.raises(tools.ToolImportError, match="cannot import `no_such_module`"):
        box.resolve("no_such_module:f")
    with pytest.raises(tools.ToolImportError, match="module:function"):
        box.resolve("just_a_name")


# ---- the threads synchronous tools run on ------------------------------------------------


def on_a_daemon(function: Any) -> Any:
    """What `function()` returned, run as an offloaded synchronous tool is."""

    async def call() -> Any:
        value, error = await tools._in_daemon_thread(function, (), {}, lambda: None)
        assert error is None
        return value

    return asyncio.run(call())


def test_an_idle_tool_thread_runs_the_next_call_and_a_hung_one_does_not_hold_it_up() -> None:
    first = on_a_daemon(threading.get_ident)
    assert on_a_daemon(threading.get_ident) == first  # kept, not a new thread per call
    go_on = threading.Event()

    def hang() -> int:
        go_on.wait()
        return threading.get_ident()

    async def both() -> None:
        stuck = tools._in_daemon_thread(hang, (), {}, lambda: None)
        then = tools._in_daemon_thread(threading.get_ident, (), {}, lambda: None)
        await asyncio.wait_for(then, 60)  # not queued behind the hung call
        assert not stuck.done()
        go_on.set()
        await stuck

    # Which thread runs which call is not fixed: a thread that finished the quick call may
    # take the hung one from the queue before the idle thread it was handed to wakes up.
    asyncio.run(both())
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("tool-"))


def test_a_forked_child_runs_tools_on_threads_of_its_own() -> None:
    on_a_daemon(threading.get_ident)  # the parent has an idle tool thread now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's idle thread is not here
        try:
            os.write(write, str(on_a_daemon(lambda: 42)).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 60)
        assert ready, "the child's tool call never ran (it was handed to a thread it lacks)"
        assert os.read(read, 16) == b"42"
    finally:
        os.close(read)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_latencies_are_milliseconds_to_the_microsecond() -> None:
    import time

    for seconds in (0.0, 0.0000004, 0.0123456, 1.5, 2.0004996):
        ms = tools.ms_since(time.perf_counter() - seconds)
        assert seconds * 1000 <= ms + 0.001 and ms < seconds * 1000 + 100  # (the clock ran on)
        assert ms == round(ms, 3)  # a whole number of µs, as `round(ms, 3)` records it


def test_a_dict_is_validated_into_a_model_whose_validator_was_deferred() -> None:
    from pydantic import ConfigDict, ValidationError

    class Deferred(BaseModel):  # as the generated models are declared
        model_config = ConfigDict(extra="forbid", defer_build=True)
        n: int

    assert tools.coerce({"n": 2}, Deferred) == Deferred(n=2)
    assert type(tools.coerce({"n": "3"}, Deferred)) is Deferred
    for bad in ({"n": "x"}, {"n": 1, "extra": 0}, {}):
        with pytest.raises(ValidationError):
            tools.coerce(bad, Deferred)


GENERATED_HEAD = "# Code generated by twelvefold 0.1.0. DO NOT EDIT.\n"


@pytest.mark.parametrize("reference", ["shop.tools:act", "shop:act"])
def test_a_generated_module_beside_the_agent_never_hides_its_tools(
    tmp_path: Path, reference: str
) -> None:
    """`compile -o build/` writes `build/shop.py` for `shop.agent`: a tool named
    `shop.tools:act` (or `shop:act`) is the one in a later folder, not that module."""
    build, source = tmp_path / "build", tmp_path / "source"
    build.mkdir()
    (build / "shop.py").write_text(GENERATED_HEAD + "AGENT = None\n")
    module = source / "shop" / "tools.py" if "." in reference else source / "shop.py"
    module.parent.mkdir(parents=True)
    module.write_text("def act() -> str:\n    return 'from the source folder'\n")
    tool = tools.ToolBox([source]).resolve(reference, [build])
    assert tool.function() == "from the source folder"


def test_a_plain_module_of_the_agents_own_folder_is_still_its_tools(tmp_path: Path) -> None:
    own, other = tmp_path / "own", tmp_path / "other"
    for folder, said in ((own, "own"), (other, "other")):
        folder.mkdir()
        (folder / "shop.py").write_text(f"def act() -> str:\n    return {said!r}\n")
    assert tools.ToolBox([other]).resolve("shop:act", [own]).function() == "own"


def test_a_data_folder_named_as_the_agent_beside_its_module_never_hides_its_tools(
    tmp_path: Path,
) -> None:
    """`build/shop/` (no `__init__.py`) beside `build/shop.py`: the import would take the
    generated file, so that folder cannot hold `shop.tools` either."""
    build, source = tmp_path / "build", tmp_path / "source"
    (build / "shop").mkdir(parents=True)
    (build / "shop.py").write_text(GENERATED_HEAD + "AGENT = None\n")
    (source / "shop").mkdir(parents=True)
    (source / "shop" / "tools.py").write_text("def act() -> str:\n    return 'source'\n")
    assert tools.ToolBox([source]).resolve("shop.tools:act", [build]).function() == "source"


def test_a_hand_written_tools_file_with_the_generated_header_says_why_it_was_passed_over(
    tmp_path: Path,
) -> None:
    (tmp_path / "shop.py").write_text(GENERATED_HEAD + "def act() -> str:\n    return 'x'\n")
    with pytest.raises(tools.ToolImportError) as raised:
        tools.ToolBox([]).resolve("shop:act", [tmp_path])
    message = str(raised.value)
    assert "cannot import `shop`" in message
    assert f"{tmp_path / 'shop.py'} was passed over" in message
    assert "remove that line" in message


def test_a_missing_dependency_of_the_tools_is_not_blamed_on_a_generated_file(
    tmp_path: Path,
) -> None:
    own, build = tmp_path / "own", tmp_path / "build"
    own.mkdir()
    build.mkdir()
    (own / "shop.py").write_text("import a_dependency_not_installed_zz\n")
    (build / "shop.py").write_text(GENERATED_HEAD + "AGENT = None\n")
    with pytest.raises(tools.ToolImportError) as raised:
        tools.ToolBox([]).resolve("shop:act", [build, own])
    message = str(raised.value)
    assert "a_dependency_not_installed_zz" in message
    assert "passed over" not in message
