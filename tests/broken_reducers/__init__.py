# ruff: noqa: E501  (the patches quote generated code and add lines up to 120 wide)
"""Deliberately broken reducers: generated modules with one small hand edit each.

Each bug is a textual patch applied to the compiler's current output (never a committed
copy), so the fixtures follow codegen; a patch whose text is no longer in the generated
module fails loudly instead of silently testing the correct reducer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from twelvefold.compiler import compile_file
from twelvefold.runtime.loading import import_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PROMPTS = ROOT / "prompts"

_CHECKED = "    recorded = AGENT.checked(state, event)  # refused, or recorded without moving\n"
"""The first line of a generated `reduce` (check and bookkeeping): where bugs are put."""
_BEFORE_INITIAL_STATE = "\n\ndef initial_state("


@dataclass(frozen=True)
class Bug:
    name: str
    agent: str
    """The example it is planted in: `deploybot`, `calculator` or `payment`."""
    patches: tuple[tuple[str, str], ...]
    """(text in the generated module, replacement); each must occur at least once."""
    caught_by: str
    """The property that must catch it."""
    why: str


BUGS: dict[str, Bug] = {
    bug.name: bug
    for bug in (
        Bug(
            "skip_approval",
            "deploybot",
            (
                (
                    'return AGENT.move(state, event, "approve_deploy", output)',
                    'return AGENT.move(state, event, "deploy", output)',
                ),
            ),
            "approval_before_sensitive_tools",
            "a production deploy goes straight to the tool",
        ),
        Bug(
            "skip_division_approval",
            "calculator",
            (
                (
                    'return AGENT.move(state, event, "approve_divide", output)',
                    'return AGENT.move(state, event, "divide", output)',
                ),
            ),
            "approval_before_sensitive_tools",
            "a division goes straight to the tool",
        ),
        Bug(
            "double_count_errors",
            "deploybot",
            (
                ("AGENT.fail(state, event,", "AGENT.fail(_counted_twice(state), event,"),
                (
                    _BEFORE_INITIAL_STATE,
                    "\n\ndef _counted_twice(state: State) -> State:\n"
                    '    return __import__("dataclasses").replace(state, errors=state.errors + 1)\n'
                    + _BEFORE_INITIAL_STATE,
                ),
            ),
            "max_errors_ceiling",
            "every failure counts twice, so the thread escalates early",
        ),
        Bug(
            "mutate_state",
            "deploybot",
            (
                (
                    "    return _REDUCERS[state.step](state, event)\n",
                    "    new = _REDUCERS[state.step](state, event)\n"
                    '    object.__setattr__(state, "errors", new.errors)  # keep it current\n'
                    "    return new\n",
                ),
            ),
            "pure_and_deterministic",
            "reduce writes the new error count into the state it was given",
        ),
        Bug(
            "mutate_event",
            "deploybot",
            (
                (
                    _CHECKED,
                    _CHECKED
                    + "    if isinstance(event, ModelOutput) and hasattr(event.output, 'tag'):\n"
                    "        event.output.tag = event.output.tag.upper()\n",
                ),
            ),
            "pure_and_deterministic",
            "reduce upper-cases the tag in the model output it is given (idempotent, so a "
            "log the strategies had already handed to it would hide the edit)",
        ),
        Bug(
            "answer_taken_as_approval",
            "deploybot",
            (("        case Approved():", "        case Approved() | Answered():"),),
            "illegal_events_raise",
            "a person's answer at the approval step is taken as an approval",
        ),
        Bug(
            "deploy_takes_any_result",
            "deploybot",
            (
                (
                    "        case ToolResult(result=DeployResult() as result):",
                    "        case ToolResult(result=result):",
                ),
            ),
            "illegal_events_raise",
            "a tool result of any type is taken as the deploy's result",
        ),
        Bug(
            "undeclared_output_taken_as_done",
            "deploybot",
            (
                (
                    "        case ModelOutput(output=DoneForNow() as output):",
                    "        case ModelOutput(output=output):",
                ),
            ),
            "illegal_events_raise",
            "a model output of a type the step does not declare finishes the thread",
        ),
        Bug(
            "approval_forgets_it_told_people",
            "deploybot",
            (
                (
                    '        approvers=("release-managers",),\n        notified=state.notified,',
                    '        approvers=("release-managers",),\n        notified=False,',
                ),
            ),
            "actions_follow_the_graph",
            "the approval's action never says people were told, so the runtime tells them "
            "again on every resume",
        ),
        Bug(
            "ignore_max_steps",
            "calculator",
            (
                ("AGENT.move(", "_UNBOUNDED.move("),
                ("AGENT.fail(", "_UNBOUNDED.fail("),
                (
                    _BEFORE_INITIAL_STATE,
                    '\n\n_UNBOUNDED = __import__("dataclasses").replace(AGENT, max_steps=None)\n'
                    + _BEFORE_INITIAL_STATE,
                ),
            ),
            "max_steps_ceiling",
            "moves are computed with a copy of the spec that lost its step budget",
        ),
        Bug(
            "skip_step_check",
            "deploybot",
            ((_CHECKED, _CHECKED.replace("AGENT.checked", "AGENT.bookkeeping")),),
            "illegal_events_raise",
            "reduce no longer checks that an event is for the thread's step, or too late",
        ),
        Bug(
            "replay_skips_notifications",
            "deploybot",
            (
                (
                    "    for event in log:\n        state = reduce(state, event)\n",
                    "    for event in log:\n"
                    '        if type(event).__name__ != "Notified":\n'
                    "            state = reduce(state, event)\n",
                ),
            ),
            "replay_equals_fold",
            "replay leaves out the events that only record that people were told",
        ),
        Bug(
            "agent_drops_requires_approval",
            "deploybot",
            (("            requires_approval=_deploy_needs_approval,\n", ""),),
            "agrees_with_source",
            "AGENT no longer says that `deploy` needs approval, so nothing checks it",
        ),
        Bug(
            "agent_raises_max_steps",
            "deploybot",
            (("    max_steps=24,", "    max_steps=25,"),),
            "agrees_with_source",
            "AGENT allows one more step than the source",
        ),
        Bug(
            "agent_moves_max_errors_target",
            "deploybot",
            (('    on_max_errors="escalate",\n', '    on_max_errors="decide",\n'),),
            "agrees_with_source",
            "the max_errors ceiling hands the thread back to the model instead of a person "
            "(a module with no target at all does not import: AgentSpec refuses it)",
        ),
        Bug(
            "list_tags_calls_deploy",
            "deploybot",
            (
                (
                    '        function="deploybot.tools:list_git_tags",\n        value=state.value,',
                    '        function="deploybot.tools:deploy_backend",\n'
                    "        value=state.value,",
                ),
            ),
            "agrees_with_source",
            "the list_tags action calls the deploy tool's function",
        ),
        Bug(
            "model_not_offered_done",
            "deploybot",
            (
                (
                    "outputs=(ListGitTags, DeployBackend, RequestMoreInformation, DoneForNow),",
                    "outputs=(ListGitTags, DeployBackend, RequestMoreInformation),",
                ),
            ),
            "agrees_with_source",
            "the model call no longer offers DoneForNow, so the thread cannot finish",
        ),
        Bug(
            "model_retries_dropped",
            "deploybot",
            (("        retries=2,\n", "        retries=0,\n"),),
            "agrees_with_source",
            "a malformed model output is no longer re-asked",
        ),
        Bug(
            "deploy_loses_started_key",
            "deploybot",
            (
                (
                    "output=DeployResult,\n        started_key=state.tool_key,",
                    "output=DeployResult,",
                ),
            ),
            "agrees_with_source",
            "after a crash mid-deploy the runtime would run it again under a fresh key",
        ),
        Bug(
            "any_event_pays",
            "payment",
            (
                (
                    "case Signalled(value=PaymentReceived() as signal):",
                    "case Signalled(value=signal):",
                ),
            ),
            "illegal_events_raise",
            "an outside event of any type moves the wait on, as if the payment had come",
        ),
        Bug(
            "timeout_counts_as_paid",
            "payment",
            (
                (
                    'case TimerFired():\n            return AGENT.move(state, event, "unpaid",',
                    'case TimerFired():\n            return AGENT.move(state, event, "cool_off",',
                ),
            ),
            "moves_follow_edges",
            "a wait whose timeout ran out goes on as if the payment had arrived",
        ),
        Bug(
            "sleep_ignores_its_request",
            "payment",
            (
                (
                    "        request=state.request,\n    )\n\n\ndef _await",
                    "        request=None,\n    )\n\n\ndef _await",
                ),
            ),
            "actions_follow_the_graph",
            "a wait's action names no request, so a timer or an event could not name it",
        ),
        # Found by the mutation harness (tests/mutation, `make mutants`): what the state
        # holds is checked against the log, not against the action that reads it.
        Bug(
            "deploy_result_allows_nan",
            "deploybot",
            (
                (
                    "allow_inf_nan=False, defer_build=True\n    )\n\n    url: str",
                    "defer_build=True\n    )\n\n    url: str",
                ),
            ),
            "agrees_with_source",
            "DeployResult takes NaN (not in its JSON schema, so only its model_config shows it)",
        ),
        Bug(
            "replay_takes_a_headless_log",
            "deploybot",
            (
                (
                    "        case _:\n            raise ValueError(\"a thread's log must start with a "
                    'Started event")',
                    '        case _:\n            state = initial_state("")',
                ),
            ),
            "replay_equals_fold",
            "replay makes up a thread for a log that lost its Started event",
        ),
        Bug(
            "forgets_the_input",
            "deploybot",
            (
                (
                    "    return AGENT.begin(value)",
                    '    return __import__("dataclasses").replace(AGENT.begin(value), input="?")',
                ),
            ),
            "actions_follow_the_graph",
            "the thread keeps another input than the one it was started with",
        ),
        Bug(
            "request_named_off_by_one",
            "deploybot",
            (
                (
                    "    return _REDUCERS[state.step](state, event)\n",
                    "    return _renamed(_REDUCERS[state.step](state, event))\n",
                ),
                (
                    _BEFORE_INITIAL_STATE,
                    "\n\ndef _renamed(state: State) -> State:\n"
                    "    if state.request is None:\n        return state\n"
                    '    return __import__("dataclasses").replace(state, request=f"{state.step}-{state.seq - 1}")\n'
                    + _BEFORE_INITIAL_STATE,
                ),
            ),
            "actions_follow_the_graph",
            "a wait's request is named after the state before the event that opened it "
            "(its action names the same id, so only the log shows it)",
        ),
        Bug(
            "decision_request_ignored",
            "deploybot",
            (
                (
                    _CHECKED,
                    "    if isinstance(event, Approved | Rejected | Answered):\n"
                    '        event = __import__("dataclasses").replace(event, request=state.request)\n'
                    + _CHECKED,
                ),
            ),
            "illegal_events_raise",
            "a decision is taken whatever request it names (a stale one from an earlier wait)",
        ),
        Bug(
            "retry_keeps_the_error",
            "deploybot",
            (
                (
                    "    if recorded is not None:\n        return recorded\n",
                    "    if recorded is not None:\n"
                    '        if type(event).__name__ == "Retried":\n'
                    '            return __import__("dataclasses").replace(recorded, error=state.error)\n'
                    "        return recorded\n",
                ),
            ),
            "actions_follow_the_graph",
            "a retried thread goes on holding the error it failed with",
        ),
        Bug(
            "failure_records_another_error",
            "deploybot",
            (
                ("AGENT.fail(state, event,", "_misrecorded(state, event,"),
                (
                    _BEFORE_INITIAL_STATE,
                    "\n\ndef _misrecorded(state: State, event: StepFailed, on_error: str | None) -> State:\n"
                    "    failed = AGENT.fail(state, event, on_error)\n"
                    '    if failed.status != "failed":\n        return failed\n'
                    '    other = __import__("twelvefold.runtime", fromlist=["ErrorInfo"]).ErrorInfo("Error", "")\n'
                    '    return __import__("dataclasses").replace(failed, error=other)\n'
                    + _BEFORE_INITIAL_STATE,
                ),
            ),
            "actions_follow_the_graph",
            "a failed thread holds (and its Fail action reports) another error than the one "
            "it failed with",
        ),
        Bug(
            "second_notice_taken",
            "deploybot",
            (
                (
                    _CHECKED,
                    '    if type(event).__name__ == "Notified" and state.notified:\n'
                    '        return __import__("dataclasses").replace(state, seq=state.seq + 1)\n'
                    + _CHECKED,
                ),
            ),
            "illegal_events_raise",
            "a second notice for a wait whose people were told is recorded, not refused",
        ),
        Bug(
            "result_without_a_start",
            "calculator",
            (
                (
                    _CHECKED,
                    '    if type(event).__name__ == "ToolResult" and state.tool_key is None:\n'
                    '        state = __import__("dataclasses").replace(state, tool_key="k")\n'
                    + _CHECKED,
                ),
            ),
            "illegal_events_raise",
            "a tool's result is taken though no call of the tool was started",
        ),
    )
}


class StalePatch(AssertionError):
    """The generated module no longer contains the text a bug patches."""


def broken_source(bug: Bug) -> str:
    result = compile_file(EXAMPLES / f"{bug.agent}.agent", prompts_dir=PROMPTS)
    ((_, source),) = result.files.items()
    for old, new in bug.patches:
        if old not in source:
            raise StalePatch(f"{bug.name}: {old!r} is not in the generated {bug.agent}.py")
        source = source.replace(old, new)
    return source


def import_source(source: str, name: str, into: Path) -> ModuleType:
    path = into / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    return import_file(path, f"_broken_{name}_{abs(hash(str(into)))}")


def broken_module(name: str, into: Path) -> ModuleType:
    bug = BUGS[name]
    return import_source(broken_source(bug), name, into)
