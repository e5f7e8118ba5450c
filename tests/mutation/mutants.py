# ruff: noqa: E501  (the patches quote generated code, whose lines are up to 100 wide)
"""The committed mutants: each one small textual patch with an id.

`target` is `deploybot` or `calculator` (a patch over the compiler's current output for
that example, judged against its `.agent` source) or `spec` (a patch over
runtime/spec.py, executed in place of the module before any generated module is
imported, judged on both examples). Every `old` text must occur exactly once in what it
patches: a patch that no longer applies is reported as stale, never silently skipped.

`equivalent` explains, in one line, a mutant that no property can kill because it does
not change what the module does; it is left out of the score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Target = Literal["deploybot", "calculator", "spec"]


@dataclass(frozen=True)
class Mutant:
    id: str
    target: Target
    patches: tuple[tuple[str, str], ...]
    """(text that occurs exactly once, its replacement), applied in order."""
    equivalent: str | None = None


def _m(id: str, target: Target, old: str, new: str, equivalent: str | None = None) -> Mutant:
    return Mutant(id, target, ((old, new),), equivalent)


_D: Target = "deploybot"
_C: Target = "calculator"
_S: Target = "spec"

_DEPLOY_ANSWER = "# deploybot.agent:53: next decide\n        case Answered(answer=answer):\n"
_ESCALATE_ANSWER = "# deploybot.agent:58: next decide\n        case Answered(answer=answer):\n"
_MOVE_DECIDE = '            return AGENT.move(state, event, "decide", answer)'
_DECIDE_FAILS = (
    '"done", output)\n        # no `on error`: the agent\'s max_errors rule, else the thread fails\n'
    "        case StepFailed():\n            return AGENT.fail(state, event, on_error=None)"
)
_LIST_TAGS_FAILS = (
    'GitTags() as result):\n            return AGENT.move(state, event, "decide", result)\n'
    "        # no `on error`: the agent's max_errors rule, else the thread fails\n"
    "        case StepFailed():\n            return AGENT.fail(state, event, on_error=None)"
)

GENERATED: tuple[Mutant, ...] = (
    # ---- deploybot: reduce cases ---------------------------------------------------
    _m("d-guard-negated", _D, 'if output.env == "production":', 'if output.env != "production":'),
    _m(
        "d-guard-literal-complement",
        _D,
        'if output.env == "production":',
        'if output.env != "staging":',
        equivalent="env is Literal['staging', 'production']: != 'staging' is == 'production'",
    ),
    _m(
        "d-guard-dropped",
        _D,
        ' if output.env == "production":\n            return AGENT.move(state, event, "approve',
        ':\n            return AGENT.move(state, event, "approve',
    ),
    _m(
        "d-list-tags-target",
        _D,
        'AGENT.move(state, event, "list_tags", output)',
        'AGENT.move(state, event, "ask_user", output)',
    ),
    _m(
        "d-done-carries-old-value",
        _D,
        'AGENT.move(state, event, "done", output)',
        'AGENT.move(state, event, "done", state.value)',
    ),
    _m(
        "d-ask-user-case-dropped",
        _D,
        "        case ModelOutput(output=RequestMoreInformation() as output):\n"
        '            return AGENT.move(state, event, "ask_user", output)\n',
        "",
    ),
    _m(
        "d-decide-on-error",
        _D,
        _DECIDE_FAILS,
        _DECIDE_FAILS.replace("on_error=None", 'on_error="decide"'),
    ),
    _m(
        "d-list-tags-result-dropped",
        _D,
        'GitTags() as result):\n            return AGENT.move(state, event, "decide", result)',
        'GitTags() as result):\n            return AGENT.move(state, event, "decide", state.value)',
    ),
    _m(
        "d-list-tags-any-result",
        _D,
        "case ToolResult(result=GitTags() as result):",
        "case ToolResult(result=result):",
    ),
    _m(
        "d-list-tags-on-error",
        _D,
        _LIST_TAGS_FAILS,
        _LIST_TAGS_FAILS.replace("on_error=None", 'on_error="decide"'),
    ),
    _m(
        "d-approved-target",
        _D,
        'case Approved():\n            return AGENT.move(state, event, "deploy"',
        'case Approved():\n            return AGENT.move(state, event, "decide"',
    ),
    _m(
        "d-rejected-deploys",
        _D,
        'case Rejected():\n            return AGENT.move(state, event, "decide"',
        'case Rejected():\n            return AGENT.move(state, event, "deploy"',
    ),
    _m(
        "d-approved-carries-input",
        _D,
        'case Approved():\n            return AGENT.move(state, event, "deploy", state.value)',
        'case Approved():\n            return AGENT.move(state, event, "deploy", state.input)',
    ),
    _m(
        "d-approval-refusal-dropped",
        _D,
        'AGENT.move(state, event, "decide", state.value)\n    raise IllegalEvent(state, event)',
        'AGENT.move(state, event, "decide", state.value)\n    return state',
    ),
    _m("d-deploy-on-error-dropped", _D, 'on_error="decide"', "on_error=None"),
    _m(
        "d-deploy-result-dropped",
        _D,
        'DeployResult() as result):\n            return AGENT.move(state, event, "decide", result)',
        'DeployResult() as result):\n            return AGENT.move(state, event, "decide", '
        "state.value)",
    ),
    _m(
        "d-answer-dropped",
        _D,
        _DEPLOY_ANSWER + _MOVE_DECIDE,
        _DEPLOY_ANSWER + _MOVE_DECIDE.replace("answer)", "state.value)"),
    ),
    _m(
        "d-escalate-loops",
        _D,
        _ESCALATE_ANSWER + _MOVE_DECIDE,
        _ESCALATE_ANSWER + _MOVE_DECIDE.replace('"decide"', '"escalate"'),
    ),
    # ---- deploybot: actions ----------------------------------------------------------
    _m("d-model-name", _D, 'model="gpt-4o-mini",', 'model="gpt-4o",'),
    _m("d-retries", _D, "        retries=2,\n", "        retries=1,\n"),
    _m(
        "d-prompt",
        _D,
        'prompt="deploybot/decide.j2",\n        model=',
        'prompt="deploybot/ask.j2",\n        model=',
    ),
    _m(
        "d-model-sees-input",
        _D,
        'step="decide",\n        value=state.value,',
        'step="decide",\n        value=state.input,',
    ),
    _m(
        "d-outputs-order",
        _D,
        "outputs=(ListGitTags, DeployBackend, RequestMoreInformation, DoneForNow),",
        "outputs=(DeployBackend, ListGitTags, RequestMoreInformation, DoneForNow),",
    ),
    _m(
        "d-list-tags-no-value",
        _D,
        'function="deploybot.tools:list_git_tags",\n        value=state.value,',
        'function="deploybot.tools:list_git_tags",\n        value=None,',
    ),
    _m("d-list-tags-output", _D, "output=GitTags,", "output=DeployResult,"),
    _m(
        "d-list-tags-loses-key",
        _D,
        "output=GitTags,\n        started_key=state.tool_key,",
        "output=GitTags,\n        started_key=None,",
    ),
    _m(
        "d-deploy-calls-list",
        _D,
        'function="deploybot.tools:deploy_backend",\n        value=',
        'function="deploybot.tools:list_git_tags",\n        value=',
    ),
    _m("d-approval-ask", _D, 'ask="Deploy {{ tag }} to {{ env }}?"', 'ask="Deploy {{ tag }}?"'),
    _m("d-approvers", _D, 'approvers=("release-managers",),', "approvers=(),"),
    _m(
        "d-approval-request",
        _D,
        "request=state.request,\n    )\n\n\ndef _approve_deploy_reduce",
        "request=None,\n    )\n\n\ndef _approve_deploy_reduce",
    ),
    _m(
        "d-answer-claims-told",
        _D,
        'ask="{{ question }}",\n        notified=state.notified,',
        'ask="{{ question }}",\n        notified=True,',
    ),
    _m(
        "d-escalate-request",
        _D,
        'advise.",\n        notified=state.notified,\n        request=state.request,',
        'advise.",\n        notified=state.notified,\n        request=None,',
    ),
    _m(
        "d-finish-input",
        _D,
        'Finish(step="done", result=state.value)',
        'Finish(step="done", result=state.input)',
    ),
    _m("d-actions-table", _D, '"deploy": _deploy_action,', '"deploy": _list_tags_action,'),
    _m(
        "d-reducers-table",
        _D,
        '"escalate": _escalate_reduce,',
        '"escalate": _ask_user_reduce,',
        equivalent="_ask_user_reduce and _escalate_reduce have the same body (an answer goes to decide)",
    ),
    _m(
        "d-fail-action-condition",
        _D,
        'if state.status == "failed" and state.error is not None:',
        'if state.status == "failed" and state.error is None:',
    ),
    _m("d-fail-action-step", _D, "Fail(step=state.step,", 'Fail(step="decide",'),
    # ---- deploybot: guards and AGENT -------------------------------------------------
    _m("d-needs-approval-never", _D, 'return value.env == "production"', "return False"),
    _m(
        "d-needs-approval-negated",
        _D,
        'return value.env == "production"',
        'return value.env != "production"',
    ),
    _m(
        "d-needs-approval-complement",
        _D,
        'return value.env == "production"',
        'return value.env != "staging"',
        equivalent="env is Literal['staging', 'production']: != 'staging' is == 'production'",
    ),
    _m("d-start", _D, 'start="decide",', 'start="list_tags",'),
    _m("d-max-errors", _D, "    max_errors=3,", "    max_errors=2,"),
    _m("d-no-max-steps-target", _D, '    on_max_steps="escalate",\n', ""),
    _m("d-edge-dropped", _D, '        EdgeSpec("deploy", "decide", "error"),\n', ""),
    _m("d-edge-guard", _D, "guard='env == \"production\"'", "guard='env == \"staging\"'"),
    _m("d-state-line", _D, "line=45,", "line=46,"),
    _m(
        "d-state-kind",
        _D,
        '"approve_deploy": StateSpec("approval",',
        '"approve_deploy": StateSpec("human",',
    ),
    _m("d-types-table", _D, '"GitTags": GitTags,', '"GitTags": DeployResult,'),
    _m("d-field-required", _D, "took_seconds: float | None = None", "took_seconds: float = 0.0"),
    _m(
        "d-nan-allowed",
        _D,
        "allow_inf_nan=False, defer_build=True\n    )\n\n    url: str",
        "defer_build=True\n    )\n\n    url: str",
    ),
    _m(
        "d-description",
        _D,
        'description="Deploys backend builds on request."',
        'description="Deploys."',
    ),
    _m(
        "d-literal-widened",
        _D,
        'env: Literal["staging", "production"]',
        'env: Literal["staging", "production", "dev"]',
    ),
    # ---- deploybot: reduce, replay, initial_state ------------------------------------
    _m(
        "d-bookkeeping-skipped",
        _D,
        "    recorded = AGENT.checked(state, event)  # refused, or recorded without moving\n"
        "    if recorded is not None:\n        return recorded\n",
        "    AGENT.check(state, event)\n",
    ),
    _m("d-input-stripped", _D, "return AGENT.begin(value)", "return AGENT.begin(value.strip())"),
    _m(
        "d-replay-drops-first",
        _D,
        "    for event in log:\n        state = reduce(state, event)",
        "    for event in list(log)[1:]:\n        state = reduce(state, event)",
    ),
    _m(
        "d-replay-begins-directly",
        _D,
        "            state = initial_state(value)",
        "            state = AGENT.begin(value)",
        equivalent="initial_state(value) is AGENT.begin(value)",
    ),
    _m(
        "d-replay-without-started",
        _D,
        '        case _:\n            raise ValueError("a thread\'s log must start with a Started event")',
        '        case _:\n            state = initial_state("")',
    ),
    # ---- calculator ------------------------------------------------------------------
    _m("c-division-needs-no-approval", _C, "    return True", "    return False"),
    _m(
        "c-add-target",
        _C,
        'AGENT.move(state, event, "add", output)',
        'AGENT.move(state, event, "subtract", output)',
    ),
    _m(
        "c-divide-carries-old-value",
        _C,
        'AGENT.move(state, event, "approve_divide", output)',
        'AGENT.move(state, event, "approve_divide", state.value)',
    ),
    _m(
        "c-add-calls-subtract",
        _C,
        'step="add",\n        function="calculator.tools:add",',
        'step="add",\n        function="calculator.tools:subtract",',
    ),
    _m(
        "c-multiply-output",
        _C,
        'function="calculator.tools:multiply",\n        value=state.value,\n        output=Number,',
        'function="calculator.tools:multiply",\n        value=state.value,\n        output=Add,',
    ),
    _m("c-divide-on-error-dropped", _C, 'on_error="decide"', "on_error=None"),
    _m("c-max-steps", _C, "    max_steps=16,", "    max_steps=17,"),
    _m("c-max-errors", _C, "    max_errors=3,", "    max_errors=4,"),
    _m(
        "c-nan-allowed",
        _C,
        "allow_inf_nan=False, defer_build=True\n    )\n\n    value: float",
        "defer_build=True\n    )\n\n    value: float",
    ),
    _m(
        "c-field-description",
        _C,
        'description="the answer, with the result in it"',
        'description="the answer"',
    ),
    _m("c-approval-ask", _C, 'ask="Divide {{ a }} by {{ b }}?"', 'ask="Divide?"'),
    _m(
        "c-rejected-divides",
        _C,
        'case Rejected():\n            return AGENT.move(state, event, "decide"',
        'case Rejected():\n            return AGENT.move(state, event, "divide"',
    ),
    _m(
        "c-model-retries",
        _C,
        'prompt="calculator/decide.j2",\n    )',
        'prompt="calculator/decide.j2",\n        retries=1,\n    )',
    ),
    _m("c-clarify-ask", _C, 'ask="{{ message }}"', 'ask="{{ question }}"'),
    _m(
        "c-reducers-table",
        _C,
        '"subtract": _subtract_reduce,',
        '"subtract": _add_reduce,',
        equivalent="_add_reduce and _subtract_reduce have the same body (a Number goes to decide)",
    ),
    _m("c-actions-table", _C, '"subtract": _subtract_action,', '"subtract": _add_action,'),
    _m(
        "c-subtract-result-any",
        _C,
        "# calculator.agent:30: next decide\n        case ToolResult(result=Number() as result):",
        "# calculator.agent:30: next decide\n        case ToolResult(result=result):",
    ),
)

SPEC: tuple[Mutant, ...] = (
    # ---- begin -------------------------------------------------------------------------
    _m(
        "s-begin-value",
        _S,
        "step=self.start,\n            value=input,",
        "step=self.start,\n            value=None,",
    ),
    _m("s-begin-input", _S, "            input=input,\n", "            input=None,\n"),
    # ---- check -------------------------------------------------------------------------
    _m("s-check-step", _S, "if event.step != state.step:", "if False:"),
    _m(
        "s-check-finished",
        _S,
        'if state.status == "finished":',
        'if state.status == "finished" and not isinstance(event, Decision):',
    ),
    _m(
        "s-check-started",
        _S,
        "        if isinstance(event, Started):\n"
        '            raise IllegalEvent(state, event, "the thread has already started")\n',
        "",
        equivalent="no generated `match` has a Started case: the step's reducer refuses it anyway",
    ),
    _m(
        "s-check-failed",
        _S,
        'if state.status == "failed" and not isinstance',
        'if state.status == "waiting" and not isinstance',
    ),
    _m("s-check-tool-key", _S, "ToolResult) and state.tool_key is None:", "ToolResult) and False:"),
    _m(
        "s-check-routine-result-unstarted",
        _S,
        "type(event) is not ToolResult or state.tool_key is not None):",
        "True):",
    ),
    _m(
        "s-check-request",
        _S,
        "isinstance(event, Decision | ChildFailed) and event.request != state.request:",
        "isinstance(event, Decision | ChildFailed) and event.request is None:",
    ),
    # ---- checked (check and bookkeeping in one call) -----------------------------------
    _m(
        "s-checked-result-unstarted",
        _S,
        "kind is ModelOutput or (kind is ToolResult and state.tool_key is not None):",
        "kind is ModelOutput or kind is ToolResult:",
    ),
    _m(
        "s-checked-any-step",
        _S,
        'if event.step == state.step and state.status == "running":',
        'if state.status == "running":',
    ),
    _m(
        "s-checked-any-status",
        _S,
        'if event.step == state.step and state.status == "running":',
        "if event.step == state.step:",
    ),
    # ---- bookkeeping -------------------------------------------------------------------
    _m(
        "s-retry-any",
        _S,
        '            if state.status != "failed":\n                raise IllegalEvent(state, event, "only',
        '            if state.status == "finished":\n                raise IllegalEvent(state, event, "only',
    ),
    _m(
        "s-retry-status",
        _S,
        "status=self._status_at(state.step), error=None)",
        'status="running", error=None)',
    ),
    _m(
        "s-retry-keeps-error",
        _S,
        "status=self._status_at(state.step), error=None)",
        "status=self._status_at(state.step), error=state.error)",
    ),
    _m(
        "s-retry-no-reopen",
        _S,
        '            if resumed.status == "waiting":\n                resumed = self._reopen(resumed)',
        "            pass",
    ),
    _m("s-retry-budget-kept", _S, "return replace(resumed, steps=0)", "return resumed"),
    _m(
        "s-retry-budget-always",
        _S,
        "state.error.type == BUDGET_EXHAUSTED.type:",
        "state.error.type != BUDGET_EXHAUSTED.type:",
    ),
    _m(
        "s-ask-not-shown-keeps-waiting",
        _S,
        'return self._copy(state, status="failed", error=event.error)',
        "return self._copy(state, error=event.error)",
    ),
    _m(
        "s-ask-not-shown-after-notice",
        _S,
        '            if state.status != "waiting" or state.notified:\n                raise IllegalEvent('
        'state, event, "only an untold',
        '            if state.status != "waiting":\n                raise IllegalEvent('
        'state, event, "only an untold',
    ),
    _m(
        "s-notified-twice",
        _S,
        '            if state.status != "waiting" or state.notified:\n                raise IllegalEvent('
        'state, event, "nobody',
        '            if state.status != "waiting":\n                raise IllegalEvent('
        'state, event, "nobody',
    ),
    _m(
        "s-notified-not-recorded",
        _S,
        "return self._copy(state, notified=True)",
        "return self._copy(state)",
    ),
    _m(
        "s-undelivered-counts-as-told",
        _S,
        "return self._copy(state, notices=state.notices + 1)",
        "return self._copy(state, notified=True)",
    ),
    _m(
        "s-undelivered-not-counted",
        _S,
        "notices=state.notices + 1)",
        "notices=state.notices)",
    ),
    _m(
        "s-fork-keeps-request",
        _S,
        'return self._reopen(forked) if forked.status == "waiting" else forked',
        "return forked",
    ),
    _m(
        "s-cancel-status",
        _S,
        'status="cancelled", error=state.error',
        'status="failed", error=state.error',
    ),
    _m(
        "s-cancel-keeps-request",
        _S,
        "replace(cancelled, request=None,",
        "replace(cancelled, request=state.request,",
    ),
    _m(
        "s-started-any-step",
        _S,
        'if self.states[state.step].kind != "tool":',
        'if self.states[state.step].kind == "final":',
    ),
    _m(
        "s-started-twice",
        _S,
        "            if state.tool_key is not None:\n                # One call",
        "            if False:\n                # One call",
    ),
    _m("s-started-key", _S, "tool_key=event.key,", "tool_key=event.key + '-1',"),
    # ---- move --------------------------------------------------------------------------
    _m(
        "s-move-resets-always", _S, "errors = 0 if self.states", "errors = 0 if True or self.states"
    ),
    _m("s-move-never-resets", _S, 'frozenset({"tool", "human", "wait", "agent"})', "frozenset()"),
    _m(
        "s-answer-keeps-errors",
        _S,
        'frozenset({"tool", "human", "wait", "agent"})',
        'frozenset({"tool", "wait", "agent"})',
    ),
    _m(
        "s-move-not-counted",
        _S,
        "steps = state.steps + 1  # this move counts",
        "steps = state.steps  # this move counts",
    ),
    _m(
        "s-move-counted-twice",
        _S,
        "steps = state.steps + 1  # this move counts",
        "steps = state.steps + 2  # this move counts",
    ),
    _m(
        "s-move-ceiling-skipped",
        _S,
        "if self._budgeted or (self.max_steps is not None and steps >= self.max_steps):",
        "if self._budgeted:",
    ),
    _m(
        "s-move-status",
        _S,
        "            value,  # value\n            status,  # status",
        '            value,  # value\n            "running",  # status',
    ),
    _m(
        "s-move-input",
        _S,
        "            state.input,  # input\n            steps,  # steps",
        "            value,  # input\n            steps,  # steps",
    ),
    _m(
        "s-move-seq",
        _S,
        "            steps,  # steps\n            errors,  # errors\n            state.seq + 1,  # seq",
        "            steps,  # steps\n            errors,  # errors\n            state.seq,  # seq",
    ),
    _m(
        "s-move-request-seq",
        _S,
        'request_id(target, state.seq + 1) if status == "waiting" else None,  # request',
        'request_id(target, state.seq) if status == "waiting" else None,  # request',
    ),
    # ---- fail --------------------------------------------------------------------------
    _m("s-fail-not-counted", _S, "errors = state.errors + 1", "errors = state.errors"),
    _m("s-fail-step-not-counted", _S, "steps = state.steps + 1\n", "steps = state.steps\n"),
    _m("s-fail-ceiling-late", _S, "errors >= self.max_errors:", "errors > self.max_errors:"),
    _m(
        "s-fail-ceiling-ignores-target",
        _S,
        "self.max_errors is not None and self.on_max_errors and",
        "self.max_errors is not None and",
        equivalent="AgentSpec.__post_init__ refuses max_errors without on_max_errors (the "
        "grammar requires `max_errors N -> STATE`), so the dropped test is always true when "
        "it is reached; it stays only to narrow the type for mypy",
    ),
    _m(
        "s-escalate-keeps-errors",
        _S,
        "state.value, steps=steps, errors=0)",
        "state.value, steps=steps, errors=errors)",
    ),
    _m(
        "s-escalate-value",
        _S,
        "self.on_max_errors, state.value,",
        "self.on_max_errors, state.input,",
    ),
    _m(
        "s-on-error-resets",
        _S,
        "on_error, state.value, steps=steps, errors=errors)",
        "on_error, state.value, steps=steps, errors=0)",
    ),
    _m(
        "s-failed-error",
        _S,
        "            error=event.error,\n            # A call whose outcome",
        "            error=BUDGET_EXHAUSTED,\n            # A call whose outcome",
    ),
    _m(
        "s-failed-seq",
        _S,
        "            seq=state.seq + 1,\n            error=event.error,",
        "            seq=state.seq,\n            error=event.error,",
    ),
    _m(
        "s-failed-steps",
        _S,
        "            steps=steps,\n            errors=errors,\n            seq=state.seq + 1,\n"
        "            error=event.error,",
        "            steps=state.steps,\n            errors=errors,\n            seq=state.seq + 1,\n"
        "            error=event.error,",
    ),
    # ---- _arrive -----------------------------------------------------------------------
    _m("s-budget-at-final", _S, 'if kind != "final" and self.max_steps', "if self.max_steps"),
    _m("s-budget-late", _S, "steps >= self.max_steps:", "steps > self.max_steps:"),
    _m(
        "s-budget-stops-behind",
        _S,
        "                    step=target,\n                    value=value,",
        "                    step=state.step,\n                    value=value,",
    ),
    _m(
        "s-budget-stop-value",
        _S,
        "                    step=target,\n                    value=value,",
        "                    step=target,\n                    value=state.value,",
    ),
    _m(
        "s-budget-target-value",
        _S,
        "target, value, steps = self.on_max_steps, state.value, 0",
        "target, value, steps = self.on_max_steps, value, 0",
    ),
    _m(
        "s-budget-target-keeps-count",
        _S,
        "target, value, steps = self.on_max_steps, state.value, 0",
        "target, value, steps = self.on_max_steps, state.value, steps",
    ),
    _m(
        "s-arrive-request-seq",
        _S,
        "request=request_id(target, state.seq + 1)",
        "request=request_id(target, state.seq)",
    ),
    _m(
        "s-arrive-input",
        _S,
        "            input=state.input,\n            steps=steps,\n            errors=errors,\n"
        "            seq=state.seq + 1,\n            request=",
        "            input=value,\n            steps=steps,\n            errors=errors,\n"
        "            seq=state.seq + 1,\n            request=",
    ),
    # ---- _reopen, _status_at -------------------------------------------------------------
    _m(
        "s-reopen-request",
        _S,
        "request=request_id(state.step, state.seq),",
        "request=request_id(state.step, state.seq - 1),",
    ),
    _m(
        "s-reopen-keeps-told",
        _S,
        "state.seq), notified=False, notices=0)",
        "state.seq), notified=state.notified, notices=0)",
    ),
    _m(
        "s-reopen-keeps-notices",
        _S,
        "state.seq), notified=False, notices=0)",
        "state.seq), notified=False, notices=state.notices)",
    ),
    _m(
        "s-human-not-waiting",
        _S,
        'frozenset({"approval", "human", "wait", "sleep", "agent"})',
        'frozenset({"approval", "wait", "sleep", "agent"})',
    ),
    _m("s-final-running", _S, '            return "finished"', '            return "running"'),
    # ---- _copy, request_id ---------------------------------------------------------------
    _m("s-copy-status", _S, "status or state.status,  # status", "state.status,  # status"),
    _m(
        "s-copy-error",
        _S,
        "error if status is not None else state.error,  # error",
        "error,  # error",
    ),
    _m(
        "s-copy-tool-key",
        _S,
        "tool_key if tool_key is not None else state.tool_key,  # tool_key",
        "tool_key,  # tool_key",
    ),
    _m(
        "s-copy-seq",
        _S,
        "state.errors,  # errors\n            state.seq + 1,  # seq",
        "state.errors,  # errors\n            state.seq,  # seq",
    ),
    _m(
        "s-copy-retry-key",
        _S,
        "state.retry_key if retry_key is KEEP else retry_key,  # retry_key",
        "None,  # retry_key",
        equivalent="nothing in the reducer sets retry_key yet (the runtime reads Retried.key)",
    ),
    _m("s-copy-request", _S, "state.request,  # request", "None,  # request"),
    _m(
        "s-copy-input",
        _S,
        "state.input,  # input\n            state.steps,  # steps",
        "None,  # input\n            state.steps,  # steps",
    ),
    _m("s-request-id-format", _S, 'return f"{step}-{seq}"', 'return f"{step}:{seq}"'),
)

MUTANTS: dict[str, Mutant] = {m.id: m for m in GENERATED + SPEC}
assert len(MUTANTS) == len(GENERATED) + len(SPEC), "mutant ids must be unique"
