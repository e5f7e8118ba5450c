"""Checks before dispatch: an `llm` step's `validate` functions and its `judge`.

They run on the model's output after instructor has validated its shape and before the
output is recorded as the step's `ModelOutput` (so before anything is dispatched). The
first check that refuses it ends the checking: the loop records an `OutputRejected`
event, and the model is asked again with the rejection in its context, one retry fewer
(docs/runtime.md, "Checks before dispatch").

The contract of a validator (`validate "module:function"`), found like a tool:

    def refund_is_sane(output: Refund) -> str | None: ...

It is called with the output (an instance of one of the step's output types; sync or
async). It accepts by returning None or True; it refuses by returning a reason (a
non-empty string) or False, or by raising `ValueError` (pydantic's `ValidationError` and
`Rejection` are ValueErrors) whose message is the reason. Any other exception is a bug in
the validator, not in the output (`SystemExit` too: a validator never ends the process):
the step fails with `ValidatorError` and asking the model again would not help.

A judge (`judge "prompt.j2"`) is a second model call through the same `Model`, with the
step's model, whose typed `Verdict` (`accept`, `reason`) accepts or refuses. Its prompt
reads the step's variables plus `output`; secret fields are hidden as everywhere else.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from .records import record
from .types import ErrorInfo, Usage, Verdict

JUDGE = "judge"
"""`OutputRejected.by` for a judge's refusal."""
REASON_LIMIT = 2000
"""Characters of a reason kept: the model reads it in its context, a person in `show`."""


class Rejection(ValueError):
    """Raised by a validator to refuse an output; its message is the reason."""


@record(slots=True)
class Refusal:
    """An output a check refused: who refused it and why."""

    by: str
    reason: str


class CheckFailed(Exception):
    """A validator that could not run (not found, or raised something other than a
    refusal): the step fails with `error`. `usage`: what a judge's failed call was paid
    for (`ModelError.usage`, priced), counted on the step's StepFailed."""

    def __init__(self, error: ErrorInfo, usage: Usage | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.usage = usage


Validator = Callable[[BaseModel], Any]
Judge = Callable[[BaseModel], Awaitable[Verdict]]


async def run_validator(
    name: str, function: Validator, output: BaseModel, *, offload: bool
) -> Refusal | None:
    """One validator on `output`: None when it accepts, the `Refusal` when it refuses.
    Raises `CheckFailed` when the validator itself breaks (see the module docstring)."""
    import asyncio

    try:
        if inspect.iscoroutinefunction(function):
            verdict = await function(output)
        elif offload:
            verdict = await asyncio.to_thread(function, output)
        else:
            verdict = function(output)
    except ValueError as exc:
        return Refusal(name, _reason(str(exc), name))
    except KeyboardInterrupt:
        raise  # Ctrl-C: the person stops the process; the step stays as after a crash
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # our caller cancelled, not the validator
        raise CheckFailed(_broke(name, exc)) from exc
    except BaseException as exc:  # SystemExit too: a validator never ends the process
        raise CheckFailed(_broke(name, exc)) from exc
    if verdict is None or verdict is True:
        return None
    if verdict is False:
        return Refusal(name, f"rejected by `{name}`")
    if isinstance(verdict, str):
        return Refusal(name, _reason(verdict, name))
    raise CheckFailed(
        ErrorInfo(
            "ValidatorError",
            f"validator `{name}` returned {type(verdict).__name__}; "
            "it must return None, a bool or a reason (a string)",
        )
    )


def _broke(name: str, exc: BaseException) -> ErrorInfo:
    """The step's error for a validator that raised `exc` (not a refusal)."""
    if isinstance(exc, SystemExit):
        detail = f"it tried to end the process (exit code {exc.code!r})"
    else:
        try:
            detail = _first_line(str(exc))
        except Exception:  # its message is input like any other
            detail = "(its message could not be read)"
    message = f"validator `{name}` raised {type(exc).__name__}" + (f": {detail}" if detail else "")
    return ErrorInfo("ValidatorError", message)


def judged(verdict: Verdict) -> Refusal | None:
    """A judge's verdict as a refusal, or None when it accepts."""
    if verdict.accept:
        return None
    return Refusal(JUDGE, _reason(verdict.reason, JUDGE))


def _reason(text: str, name: str) -> str:
    text = text.strip() or f"rejected by `{name}`"
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


__all__ = ["JUDGE", "CheckFailed", "Refusal", "Rejection", "judged", "run_validator"]
