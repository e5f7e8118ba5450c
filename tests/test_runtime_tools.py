"""Tool calls: import by path, typed input, idempotency keys, retries, timeouts, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from tests.runtime_helpers import FIXTURES
from twelvefold.runtime import tools
from twelvefold.runtime.types import CallTool


class Count(BaseModel):
    n: int


def run(function: str, value: Any = None, **options: Any) -> tools.Outcome:
    box = tools.ToolBox([FIXTURES])
    action = CallTool(
        step="s", function=f"sample_tools:{function}", value=value, output=Count, **options
    )
    return asyncio.run(
        tools.call(box.resolve(action.function), action, "thread:s:3", offload=False)
    )


@pytest.fixture(autouse=True)
def fresh_calls() -> None:
    import sys

    sys.path.insert(0, str(FIXTURES))
    import sample_tools  # type: ignore[import-not-found]

    sample_tools.calls.clear()


def calls() -> list[Any]:
    import sample_tools

    return list(sample_tools.calls)


def test_the_typed_input_and_the_key_are_passed_and_a_dict_becomes_the_output() -> None:
    outcome = run("keyed", Count(n=1))
    assert outcome.result == Count(n=2) and outcome.error is None
    assert calls() == [("keyed", "thread:s:3")]


def test_a_tool_without_parameters_is_called_without_the_input() -> None:
    assert run("no_input", Count(n=5)).result == Count(n=0)


def test_retry_backs_off_exponentially_and_only_the_last_failure_counts() -> None:
    outcome = run("flaky", Count(n=7), retries=2, backoff_seconds=0.01)
    assert outcome.result == Count(n=7)
    times = [t for _, t in calls()]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.01  # backoff 10 ms,
    assert times[2] - times[1] >= 0.02  # then twice that


def test_a_failure_is_its_type_and_a_one_line_message() -> None:
    outcome = run("always_fails", Count(n=1), retries=1)
    assert outcome.result is None
    assert str(outcome.error) == "LookupError: no tag 1"
    flaky = run("flaky", Count(n=1))
    assert str(flaky.error) == "ConnectionError: cluster unreachable"


def test_a_timeout_is_a_failure() -> None:
    outcome = run("slow", Count(n=1), timeout_seconds=0.05)
    assert outcome.error is not None and outcome.error.type == "TimeoutError"
    assert "did not return within 0.05s" in outcome.error.message


def test_async_tools_are_awaited() -> None:
    assert run("async_tool", Count(n=4)).result == Count(n=8)


def test_results_of_the_wrong_shape_fail_the_step() -> None:
    assert run("wrong_shape", Count(n=1)).error.type == "ValidationError"  # type: ignore[union-attr]
    error = run("not_a_model", Count(n=1)).error
    assert error is not None and error.message.startswith("returned int, expected Count")


def test_unknown_tools_are_named() -> None:
    box = tools.ToolBox([FIXTURES])
    with pytest.raises(tools.ToolImportError, match="has no function `missing`"):
        box.resolve("sample_tools:missing")
    with pytest.raises(tools.ToolImportError, match="cannot import `no_such_module`"):
        box.resolve("no_such_module:f")
    with pytest.raises(tools.ToolImportError, match="module:function"):
        box.resolve("just_a_name")
