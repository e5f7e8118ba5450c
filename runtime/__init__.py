"""twelvefold.runtime: what generated reducer modules import, and the runtime that runs them.

Generated modules import only names listed in `__all__` here.
"""

if __name__ != "twelvefold.runtime":  # pragma: no cover - what the guard refuses
    # The repository shows this folder at its top; it is a part of the twelvefold package
    # and must never be importable under a second name (two copies of every class).
    raise ImportError(f"import twelvefold.runtime, not {__name__}")

from .redact import SECRET
from .spec import AgentSpec, ContextSpec, EdgeSpec, StateSpec
from .types import (
    Action,
    Answer,
    Answered,
    Approved,
    AwaitAnswer,
    AwaitApproval,
    AwaitSignal,
    CallModel,
    CallTool,
    Cancelled,
    Decision,
    ErrorInfo,
    Event,
    Fail,
    Finish,
    Forked,
    IllegalEvent,
    ModelOutput,
    Notified,
    OutputRejected,
    Rejected,
    Retried,
    Signalled,
    Sleep,
    Started,
    State,
    StepFailed,
    TimerFired,
    ToolResult,
    ToolStarted,
    Usage,
    Verdict,
)

__all__ = [
    "SECRET",
    "Action",
    "AgentSpec",
    "Answer",
    "Answered",
    "Approved",
    "AwaitAnswer",
    "AwaitApproval",
    "AwaitSignal",
    "CallModel",
    "CallTool",
    "Cancelled",
    "ContextSpec",
    "Decision",
    "EdgeSpec",
    "ErrorInfo",
    "Event",
    "Fail",
    "Finish",
    "Forked",
    "IllegalEvent",
    "ModelOutput",
    "Notified",
    "OutputRejected",
    "Rejected",
    "Retried",
    "Signalled",
    "Sleep",
    "Started",
    "State",
    "StateSpec",
    "StepFailed",
    "TimerFired",
    "ToolResult",
    "ToolStarted",
    "Usage",
    "Verdict",
]
