"""runtime/checks.py: the validator contract (docs/language.md, "Checks before dispatch")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from twelvefold.runtime.checks import REASON_LIMIT, CheckFailed, Rejection, judged, run_validator
from twelvefold.runtime.types import Verdict


class Refund(BaseModel):
    amount: float


ONE = Refund(amount=1)


def check(function: Any) -> Any:
    return asyncio.run(run_validator("m:f", function, ONE, offload=False))


@pytest.mark.parametrize("accepts", [lambda o: None, lambda o: True])
def test_none_or_true_accepts(accepts: Any) -> None:
    assert check(accepts) is None


def test_a_reason_or_false_or_a_value_error_refuses() -> None:
    assert check(lambda o: "too much").reason == "too much"
    assert check(lambda o: False).reason == "rejected by `m:f`"
    assert check(lambda o: "   ").reason == "rejected by `m:f`"

    def raises(o: Any) -> None:
        raise Rejection(f"{o.amount} is not allowed")

    refusal = check(raises)
    assert (refusal.by, refusal.reason) == ("m:f", "1.0 is not allowed")
    assert len(check(lambda o: "x" * 5000).reason) == REASON_LIMIT


def test_an_async_validator_is_awaited() -> None:
    async def later(o: Any) -> str:
        return "async says no"

    assert check(later).reason == "async says no"


def test_a_broken_validator_fails_the_step_without_a_traceback() -> None:
    def broken(o: Any) -> None:
        raise KeyError("boom")

    with pytest.raises(CheckFailed) as failed:
        check(broken)
    assert failed.value.error.type == "ValidatorError"
    assert failed.value.error.message == "validator `m:f` raised KeyError: 'boom'"
    with pytest.raises(CheckFailed, match="must return None, a bool or a reason"):
        check(lambda o: 42)


def test_a_verdict_accepts_or_refuses_with_its_reason() -> None:
    assert judged(Verdict(accept=True, reason="fine")) is None
    refusal = judged(Verdict(accept=False, reason="too big"))
    assert refusal is not None and (refusal.by, refusal.reason) == ("judge", "too big")


def test_a_snapshot_written_before_rejections_existed_still_decodes() -> None:
    from twelvefold.runtime.codec import Codec
    from twelvefold.runtime.types import State

    codec = Codec()
    state = State(step="decide", value=None, status="running", input="hi", rejections=2)
    stored = codec.encode_state(state)
    assert codec.decode_state(stored) == state
    del stored["rejections"]  # as an older twelvefold wrote it
    assert codec.decode_state(stored).rejections == 0


def test_an_output_rejected_event_round_trips_through_the_codec() -> None:
    from twelvefold.runtime.codec import Codec
    from twelvefold.runtime.types import OutputRejected

    codec = Codec()
    codec.types["Refund"] = Refund
    event = OutputRejected(step="decide", output=ONE, by="m:f", reason="no")
    text = codec.dumps_event(event)
    assert '"kind":"output_rejected"' in text
    assert codec.loads_event(text) == event


def test_a_validator_that_raises_system_exit_fails_the_step() -> None:
    def ends(o: Any) -> None:
        raise SystemExit(3)

    with pytest.raises(CheckFailed) as failed:
        check(ends)
    assert failed.value.error.type == "ValidatorError"
    assert "exit code 3" in failed.value.error.message
