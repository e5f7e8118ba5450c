"""`twelvefold run`, `resume`, `fork`, `cancel`, `expire`, `threads` and `show`: threads
from the command line.

Threads live in a store: a SQLite file, `.twelvefold/threads.db` in the current directory
unless --db, --store or the configuration's `store` says otherwise (docs/stores.md), so a
thread launched by one command can be resumed by another, any time later.

A decision names the request it answers (`--request ID`, printed wherever a thread waits).
Without it, a person at a terminal is shown the pending request and asked to confirm;
without a terminal the command refuses and names the pending request. The local CLI is
an operator's tool: `--by` says who decides (there is no default, so an approval with
`approvers` needs `--by` naming a member), and each decision records `cli (os user NAME)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import re
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from twelvefold.commands.options import (
    AGENT,
    DB,
    FOLDER_HINT,
    PROMPTS,
    GivenPath,
    PathText,
    existing_folders,
    removed_if_refused,
)
from twelvefold.commands.output import damaged_rows, echo, flag_damaged, table
from twelvefold.commands.report import CommandError
from twelvefold.interrupts import go_on
from twelvefold.runtime.api import (
    Expiry,
    Runtime,
    ThreadView,
    UnenforcedApprovers,
    new_thread_id,
    nobody_decides,
    plain,
    shown,
)
from twelvefold.runtime.loop import INTERRUPTED, Agent, Thread
from twelvefold.runtime.names import declared_name
from twelvefold.runtime.spec import AgentSpec, Spent
from twelvefold.runtime.store import (
    Pin,
    StoreLocation,
    ThreadInfo,
    ThreadNotFound,
    open_store,
    store_exists,
    url_without_password,
)
from twelvefold.runtime.terminal import hidden_characters, one_line
from twelvefold.runtime.timeouts import as_moment
from twelvefold.runtime.tracing import configure_from_env
from twelvefold.runtime.types import (
    KIND_OF_EVENT,
    Answered,
    Approved,
    AttemptFailed,
    Cancelled,
    ChildEnded,
    ChildStarted,
    Decision,
    Event,
    Forked,
    ModelOutput,
    Notified,
    OutputRejected,
    Rejected,
    Retried,
    Signalled,
    Started,
    State,
    StepFailed,
    ToolResult,
    ToolStarted,
)
from twelvefold.runtime.usage import Totals, by_thread, usage_text, valid_tokens, with_children

SUMMARY_WIDTH = 72
EXIT_UNTOLD = 3
"""`run`/`resume`: the thread waits for a person but no notice reached anyone (the pause
is stored; `expire` tries the notice again). `expire`: some request is still untold or was
never delivered. 1 stays "failed or could not be done"."""


# ---- printing events ------------------------------------------------------------------


def summarize(event: Event) -> str:
    """One line about an event, for people watching a run."""
    match event:
        case Started(input=value, parent=parent):
            text = _compact(value) + (f" (a sub-agent of thread {parent})" if parent else "")
        case ChildStarted(child=child):
            text = f"thread {child}"
        case ChildEnded(value=value):
            text = _compact(value)
        case ModelOutput(output=output):
            text = f"{declared_name(type(output))} {_compact(output)}"
        case ToolStarted(key=key):
            text = f"key {key}"
        case ToolResult(result=result):
            text = _compact(result)
        case StepFailed(error=error):
            text = str(error)
        case AttemptFailed(attempt=attempt, error=error, retry_at=retry_at):
            text = f"attempt {attempt}: {error}; again at {retry_at}"
        case OutputRejected(output=output, by=by, reason=reason):
            text = f"{declared_name(type(output))} refused by {by}: {reason}"
        case Notified(channels=channels, failed=failed):
            text = "told " + (", ".join(channels) or "nobody")
            if failed:
                text += "; failed " + ", ".join(f.split(":", 1)[0] for f in failed)
        case Approved(by=by, comment=comment) | Rejected(by=by, comment=comment):
            text = " ".join(p for p in (f"by {by}" if by else "", comment or "") if p)
        case Answered(answer=answer):
            text = answer.text
        case Signalled(type=kind, value=value, key=key):
            text = f"{kind} {_compact(value)}" + (f" key {key}" if key else "")
        case Retried(by=by, key=key, approval=approval):
            reusing = f"reusing key {key}" if key else ""
            asks = f"a new call: back to {approval} for a new decision" if approval else ""
            text = " ".join(p for p in (f"by {by}" if by else "", reusing, asks) if p)
        case Forked(parent=parent, parent_seq=parent_seq):
            text = f"from {parent} after event {parent_seq}"
        case Cancelled(by=by, reason=reason):
            text = " ".join(p for p in (f"by {by}" if by else "", reason or "") if p)
        case _:
            text = ""
    text = one_line(text)  # a value's line break would start a forged event line
    text = text if len(text) <= SUMMARY_WIDTH else text[: SUMMARY_WIDTH - 1] + "…"
    if isinstance(event, Decision) and event.request:  # never cut off: it says what was decided
        text = f"{text} (request {event.request})".lstrip()
    return text


def latency_text(ms: float) -> str:
    """`1,090 ms`, `12 ms`, `0.4 ms`: whole milliseconds with thousands separators (never
    `1.09e+03`), one decimal below 10 ms."""
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:,.0f} ms"


def event_line(seq: int, event: Event) -> str:
    kind = KIND_OF_EVENT[type(event)]
    cost = []
    if event.usage is not None:
        if event.usage.latency_ms is not None:
            cost.append(latency_text(event.usage.latency_ms))
        if event.usage.input_tokens is not None or event.usage.output_tokens is not None:
            counts = (event.usage.input_tokens, event.usage.output_tokens)
            shown = [f"{n or 0}" if valid_tokens(n) or n is None else "?" for n in counts]
            cost.append(f"{shown[0]}→{shown[1]} tok")  # "?": out of bounds (edited by hand)
        if event.usage.cost_usd is not None:
            cost.append(f"${event.usage.cost_usd:.4f}")
    line = f"{seq:>4}  {event.step:<16} {kind:<13} {summarize(event)}"
    return f"{line}  ({', '.join(cost)})" if cost else line


def _compact(value: Any) -> str:
    data = plain(value)
    if isinstance(data, str):
        return one_line(data)
    return json.dumps(data, ensure_ascii=False, separators=(", ", ": "))


def print_view(view: ThreadView, db: StoreLocation) -> None:
    where = f"thread {view.id} ({view.agent})"
    if view.parent is not None:
        where += f", a sub-agent of thread {view.parent},"
    if view.status == "finished":
        echo(f"\n{where} finished: {_compact(view.output)}")
    elif view.waiting_for == "agent":
        echo(f"\n{where} waits at `{view.step}` for its sub-agent")
        if view.child is not None:
            echo(f"  child: thread {view.child} (its requests are decided there)")
            echo(f"  show: twelvefold show {view.child}{given_again(STORE_OPTIONS)}")
    elif view.waiting_for in ("event", "timer"):
        what = f"an event {view.event_type}" if view.waiting_for == "event" else "its timer"
        echo(f"\n{where} waits at `{view.step}` for {what}")
        if view.wake_at is not None:
            echo(f"  until: {view.wake_at} (`twelvefold expire` wakes it then)")
        echo(f"  request: {view.request}")
        if view.waiting_for == "event":
            echo(
                f"  send: twelvefold send {view.id} {view.event_type} JSON"
                f" --request {view.request}{given_again()}"
            )
    elif view.status == "waiting":
        echo(f"\n{where} waits at `{view.step}` for {view.waiting_for}: {view.question}")
        if (shown_value := value_line(view)) is not None:
            echo(shown_value)
        echo(f"  request: {view.request}")
        echo(f"  resume: {resume_hint(view)}")
        if view.approvers:
            groups = ", ".join(shown(group) for group in view.approvers)
            echo(f"  by: NAME, a member of {groups} (only they decide it)")
    elif view.status == "failed":
        echo(f"\n{where} failed at `{view.step}`: {view.error}")
        if view.parent is None:
            echo(f"  retry: twelvefold resume {view.id} --retry{given_again()}")
        else:  # its parent's `agent` step takes its end: a retry here would reach nobody
            echo(
                "  retry: a sub-agent's thread: see its parent, "
                f"twelvefold show {view.parent}{given_again(STORE_OPTIONS)}"
            )
        if view.error == INTERRUPTED:  # a keyless tool's call cut short by a crash
            echo(
                "  (the call may have run, and its tool takes no idempotency key: a retry"
                " runs it again; check whether it had its effect first)"
            )
        elif view.state.retry_key is not None:  # see docs/runtime.md, one call one key
            echo(f"  (the call may have run: a retry reuses its key {view.state.retry_key})")
    elif view.status == "cancelled":
        echo(f"\n{where} was cancelled at `{view.step}`")
    else:
        echo(f"\n{where} is running at `{view.step}`")
        if (failed := view.failed_attempt) is not None:
            echo(f"  next try: {view.retry_at} (attempt {failed.attempt} failed: {failed.error})")
    if (spent := usage_line(view)) is not None:
        echo(spent)
    echo(f"  stored in {one_line(str(db))}")
    if view.untold:
        echo(f"  nobody was told: {'; '.join(view.notice_failed) or 'no attempt yet'}")
        echo(
            f"  `twelvefold expire{given_again(STORE_OPTIONS)}` tries the notice again"
            " (run it from cron)"
        )


def usage_line(view: ThreadView) -> str | None:
    """`  usage: 3 steps, 2 model calls, 1,204→310 tokens, $0.0004, waited 2.0 h`; None
    before the first step."""
    text = usage_text(view.usage)
    return None if text is None else "  usage: " + text


def value_line(view: ThreadView) -> str | None:
    """`  value: {...}`: what a waiting thread's request decides, shown whatever its `ask`
    names (JSON, so control characters come out escaped); None when it carries nothing."""
    value = plain(view.state.value)
    return None if value is None else f"  value: {json.dumps(value, ensure_ascii=False)}"


def resume_hint(view: ThreadView) -> str:
    """The command that decides a waiting thread's pending request (with the options this
    command was given that it needs too, `given_again`)."""
    from twelvefold.runtime.notify import by_option

    if view.waiting_for == "approval":  # with the decider's name when only some may decide
        decide = f"{by_option(view.approvers)} --approve | --reject --comment C"
    else:
        decide = " --answer TEXT"
    return f"twelvefold resume {view.id} --request {view.request}{given_again()}{decide}"


STORE_OPTIONS = {"db": "--db", "store_url": "--store"}
RUN_OPTIONS = {
    **STORE_OPTIONS,
    "prompts": "--prompts",
    "paths": "--path",
    "model": "--model",
    "cassette": "--cassette",
    "record": "--record",
}
"""What a command that suggests another repeats, by click parameter name: where the
threads are, and for one that runs a thread on, its model, prompts and tools."""


def given_again(options: dict[str, str] = RUN_OPTIONS) -> str:
    """The `options` this command was given on its command line, as the command it
    suggests needs them too: ` --db 'my threads.db' --cassette c.jsonl` (each value
    quoted for a POSIX shell, `shlex.quote`), or `""`. Without them the suggestion ran on
    the default store or the real model (no API key) instead. One taken from the
    environment or the configuration is left out, as the next command reads it there
    too; a store URL is given without its password (`url_without_password`: PGPASSWORD or
    ~/.pgpass gives it; one shown as `***` would be sent as the password)."""
    context = click.get_current_context(silent=True)
    if context is None:
        return ""
    given = []
    for name, flag in options.items():
        if context.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        value = context.params.get(name)
        for each in value if isinstance(value, tuple) else (value,):
            if each is None:
                continue
            shown = url_without_password(each) if name == "store_url" else str(each)
            given.append(f" {flag} {shell_word(shown)}")
    return "".join(given)


_UNSEEN = hidden_characters()
"""A character a person cannot see, a line break or a tab (runtime/terminal.py)."""

_C_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


_ODD_SPACE = re.compile(r"[^\S ]")
"""A blank other than the space: a no-break space, copied from a terminal as a space."""


def shell_word(text: str) -> str:
    """`text` as one word for a shell: `shlex.quote`'s POSIX quoting, or, when it holds a
    character of `HIDDEN` (a line break, a zero-width space, a bidirectional control) or
    a blank other than the space (a no-break space), bash's and zsh's ANSI-C quoting
    `$'…'` with each such character escaped (`\\n`; others as their UTF-8 bytes,
    `\\xe2\\x80\\x8b`, which every locale reads alike, where `\\u200b` is expanded in a
    UTF-8 locale only; a byte a file name held that was not UTF-8, `\\xff`). Printed raw,
    a line break would start a line of its own under the hint (a forged `resume:` line),
    and an invisible character would be copied as nothing, or not at all."""
    if not _UNSEEN.search(text) and not _ODD_SPACE.search(text):
        return shlex.quote(text)
    written = []
    for character in text:
        code = ord(character)
        if character in _C_ESCAPES:
            written.append(_C_ESCAPES[character])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte the command line could not decode
            written.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            written.append(f"\\x{code:02x}")
        elif _UNSEEN.match(character) or _ODD_SPACE.match(character):
            written.extend(f"\\x{byte:02x}" for byte in character.encode("utf-8", "replace"))
        else:
            written.append(character)
    return "$'" + "".join(written) + "'"


def cli_via() -> str:
    """How a CLI decision records where it came from: the OS user at the terminal."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment or the passwd file
        user = "unknown"
    return f"cli (os user {user})"


# ---- the runtime the commands share ---------------------------------------------------


def make_model(cassette: Path | None, record: Path | None, model: str | None) -> Any:
    """--cassette replays recorded outputs; --record records the real model's; else the
    real model (loaded only when a step calls it)."""
    if cassette is not None:
        from twelvefold.runtime.cassette import CassettePlayer

        return CassettePlayer(cassette)
    if record is None and model is None:
        return None
    from twelvefold.runtime.model import OpenAIModel

    real = OpenAIModel(model=model)
    if record is None:
        return real
    from twelvefold.runtime.cassette import CassetteRecorder

    return CassetteRecorder(real, record)


@contextmanager
def runtime(
    db: StoreLocation,
    *,
    model: Any = None,
    paths: tuple[Path, ...] = (),
    quiet: bool = False,
    create: bool = False,
    prompts: Path | None = None,
) -> Iterator[Runtime]:
    """A runtime on the store at `db`; only a command that launches threads (`create`)
    makes a store that does not exist yet, the others say it is missing. With `quiet`
    (a command printing one JSON document), what tools print goes to stderr, so it cannot
    corrupt that document. `prompts` (`--prompts DIR`) is the templates folder of the
    agent the command names or the thread recorded (not of its sub-agents)."""

    reader_gone = False

    def print_event(thread: Thread, event: Event) -> None:
        nonlocal reader_gone
        if not reader_gone:
            try:
                echo(event_line(len(thread.events), event))
            except BrokenPipeError:
                # The reader went away (`run … | head -1`): the thread runs on to where it
                # pauses or ends, as it would unwatched, rather than stop mid-step holding
                # its lease; the command's next line then ends it quietly (report.py).
                reader_gone = True
        # A Ctrl-C Python lost (interrupts.py) stops the run here, once the event it
        # stored is printed: what is shown is what the log holds.
        go_on()

    shutdown = configure_from_env()  # OTEL_EXPORTER_OTLP_* (docs/observability.md)
    try:
        store = open_store(db, create=create)
        hook: Callable[[Thread, Event], None] = at_event if quiet else print_event
        keep_stdout = contextlib.redirect_stdout(sys.stderr) if quiet else contextlib.nullcontext()
        try:
            with (
                Runtime(
                    store, model=model, tool_paths=paths, on_event=hook, prompts_dir=prompts
                ) as rt,
                keep_stdout,
            ):
                yield rt
        finally:
            # Also when the runtime refuses its settings (TWELVEFOLD_LEASE_SECONDS=abc):
            # a store left open looks in use, and a refused run's new store was kept.
            store.close()
    finally:
        if shutdown is not None:
            shutdown()  # exports the spans still queued before the process exits


def at_event(thread: Thread, event: Event) -> None:
    """The runtime's event hook when events are not printed (`--json`): a Ctrl-C Python
    lost (interrupts.py) stops the run at its next event, as a printed one does."""
    go_on()


def finish(view: ThreadView, db: StoreLocation, as_json: bool) -> None:
    if as_json:
        echo(json.dumps(view.to_json(), ensure_ascii=False))
    else:
        print_view(view, db)
    if view.untold:
        echo(f"warning: thread {view.id} waits but no notice reached anyone", err=True)
    sys.exit(1 if view.status == "failed" else EXIT_UNTOLD if view.untold else 0)


@contextmanager
def stopped_at(rt: Runtime, thread_id: str) -> Iterator[None]:
    """Ctrl-C while `thread_id` runs becomes a `KeyboardInterrupt` saying where the thread
    stopped and how to run it on, for `reported` (commands/report.py) to print. The
    runtime has unwound the run by then (`Runtime` cancels a call Ctrl-C interrupts), so
    the thread's log is complete: a tool attempt that failed before a backoff is
    recorded, and is tried again on resume."""
    try:
        yield
    except KeyboardInterrupt:
        raise KeyboardInterrupt(where_it_stopped(rt, thread_id)) from None


def where_it_stopped(rt: Runtime, thread_id: str) -> str:
    """`thread T stopped at `fetch` ...; `twelvefold resume T` runs it on` (one line)."""
    try:
        view = rt.get(thread_id)
    except ThreadNotFound:
        return "no thread was started"
    except Exception:  # the log cannot be read now (a Ctrl-C as asyncio loaded: rt20)
        try:
            rt.store.info(thread_id)  # the thread's row alone, read without the loop
        except ThreadNotFound:
            return "no thread was started"
        except Exception:
            pass  # say what is known
        return (
            f"thread {thread_id} stopped; "
            f"`twelvefold show {thread_id}{given_again(STORE_OPTIONS)}` shows where"
        )
    if view.status != "running":
        return view_stopped(view)
    again = given_again()
    if view.state.tool_key is not None and not _runs_it_again(rt, view):
        # Resume will not run a keyless call that may have run: say so, not "runs it on".
        return (
            f"thread {view.id} stopped during `{view.step}`'s tool call, which takes no "
            f"idempotency key, so it may or may not have run: `twelvefold resume {view.id}"
            f"{again}` records the step as failed (Interrupted) without running it again; "
            f"`twelvefold resume {view.id} --retry{again}` then runs it again"
        )
    due = "" if view.retry_at is None else f", its next try due at {view.retry_at}"
    return (
        f"thread {view.id} stopped at `{view.step}`{due}; nothing is lost: "
        f"`twelvefold resume {view.id}{again}` runs it on"
    )


def view_stopped(view: ThreadView) -> str:
    """`thread T is waiting at `approve` (`twelvefold show T`)`: a thread that is not
    running (it finished, waits or failed before Ctrl-C)."""
    shown = f"twelvefold show {view.id}{given_again(STORE_OPTIONS)}"
    return f"thread {view.id} is {view.status} at `{view.step}` (`{shown}`)"


def _runs_it_again(rt: Runtime, view: ThreadView) -> bool:
    """Whether `resume` runs the tool call `view` stopped in again: only a tool that takes
    an idempotency key is (runtime/loop.py, `_call_tool`)."""
    try:
        agent = rt.agent_of(view.id)
        function = agent.spec.states[view.step].function
    except Exception:  # the agent does not load now: resume will say why
        return False
    return function is not None and rt.aio.engine.takes_key(agent, function) is True


# ---- commands ---------------------------------------------------------------------------

JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
MODEL_OPTIONS = [
    click.option("--model", help="Model name (overrides the agent's)."),
    click.option(
        "--cassette",
        # A folder is refused in one line, exit 1, as any path it cannot read.
        type=GivenPath(),
        help="Replay model outputs from this cassette (no network).",
    ),
    click.option(
        "--record",
        type=GivenPath(),  # a folder: one line, exit 1
        help="Record the model's outputs to this cassette.",
    ),
    click.option(
        "--path",
        "paths",
        multiple=True,
        type=GivenPath(hint=FOLDER_HINT),
        callback=existing_folders,
        metavar="DIRECTORY",
        help="Another folder to import tools from (repeatable).",
    ),
]


def model_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(MODEL_OPTIONS):
        function = option(function)
    return function


def _check_model_flags(cassette: Path | None, record: Path | None) -> None:
    if cassette is not None and record is not None:
        raise click.UsageError("give --cassette or --record, not both")


@click.command()
@click.argument("agent", type=PathText())
@click.option("--input", "input_text", required=True, help="The thread's input.")
@PROMPTS
@DB
@model_options
@JSON
def run(
    agent: str,
    input_text: str,
    prompts: Path | None,
    db: StoreLocation,
    model: str | None,
    cassette: Path | None,
    record: Path | None,
    paths: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Launch a thread of AGENT (a .agent file or a generated module) and run it until it
    waits for a person, finishes or fails."""
    _check_model_flags(cassette, record)
    view: ThreadView | None = None
    try:
        with (
            removed_if_refused(db),  # a refused run leaves no store behind
            runtime(
                db,
                model=make_model(cassette, record, model),
                paths=paths,
                quiet=as_json,
                create=True,
                prompts=prompts,
            ) as rt,
            stopped_at(rt, thread_id := new_thread_id()),
        ):
            view = rt.launch(agent, input_text, thread_id=thread_id)
    except KeyboardInterrupt as exc:  # before or after the launch: say which
        raise KeyboardInterrupt(
            str(exc) or ("no thread was started" if view is None else view_stopped(view))
        ) from None
    finish(view, db, as_json)


@click.command()
@click.argument("thread")
@click.option("--approve", is_flag=True, help="Approve the step the thread waits at.")
@click.option("--reject", is_flag=True, help="Reject it (give a --comment).")
@click.option("--comment", help="Why; the model sees it in its context.")
@click.option("--answer", help="Answer the question the thread waits on.")
@click.option("--retry", is_flag=True, help="Try a failed thread again from its failed step.")
@click.option(
    "--reuse-key",
    is_flag=True,
    help="With --retry after a tool returned an error: call it again with the failed "
    "call's idempotency key instead of a new one.",
)
@click.option(
    "--request",
    help="The request you decide (printed where the thread waits). Without it you are "
    "shown the pending request and asked to confirm (a terminal only).",
)
@click.option(
    "--by",
    help="Who approves, rejects or answers. No default: an approval with `approvers` "
    "needs a member of one of its groups.",
)
@AGENT
@PROMPTS
@DB
@model_options
@JSON
def resume(
    thread: str,
    approve: bool,
    reject: bool,
    comment: str | None,
    answer: str | None,
    retry: bool,
    reuse_key: bool,
    request: str | None,
    by: str | None,
    agent: str | None,
    prompts: Path | None,
    db: StoreLocation,
    model: str | None,
    cassette: Path | None,
    record: Path | None,
    paths: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Continue THREAD: approve, reject, answer or retry it. With none of these, continue
    a thread whose process stopped while it was running.

    A decision names the request it answers (--request); one for a request that is no
    longer pending is refused (exit 1) and nothing is recorded."""
    _check_model_flags(cassette, record)
    deciding = approve or reject or answer is not None
    if approve + reject + (answer is not None) + retry > 1:
        raise click.UsageError("give one of --approve, --reject, --answer or --retry")
    if reuse_key and not retry:
        raise click.UsageError("--reuse-key goes with --retry")
    if reject and not comment:
        raise click.UsageError("--reject needs a --comment saying why")
    if request is not None and not deciding:
        raise click.UsageError("--request goes with --approve, --reject or --answer")
    with (
        runtime(
            db,
            model=make_model(cassette, record, model),
            paths=paths,
            quiet=as_json,
            prompts=prompts,
        ) as rt,
        stopped_at(rt, thread),
    ):
        if retry:
            view = rt.retry(thread, by=by, reuse_key=reuse_key, agent=agent)
        else:
            if deciding and request is None:
                request = confirmed_request(rt.get(thread, agent=agent), approve, reject, as_json)
            with warnings.catch_warnings(record=True) as warned:
                warnings.simplefilter("always", UnenforcedApprovers)
                view = rt.resume(
                    thread,
                    approve=approve,
                    reject=reject,
                    comment=comment,
                    answer=answer,
                    by=by,
                    request=request,
                    via=cli_via(),
                    agent=agent,
                )
            for warning in warned:
                echo(f"WARNING: {warning.message}", err=True)
    finish(view, db, as_json)


def confirmed_request(view: ThreadView, approve: bool, reject: bool, as_json: bool) -> str:
    """The pending request, once a person at a terminal has seen it and confirmed; else
    a `CommandError` naming it (no terminal to ask on, --json output that a question would
    corrupt, or nothing pending)."""
    if view.status != "waiting" or view.request is None:
        raise CommandError(
            f"thread {view.id} is {view.status} at `{view.step}`: no request is pending"
        )
    if view.waiting_for not in ("approval", "answer"):
        raise CommandError(nobody_decides(view))
    if as_json or not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CommandError(
            f"name the request you decide: thread {view.id} waits on request "
            f"`{view.request}` ({shown(view.question or '')}); add --request {view.request}"
        )
    echo(f"thread {view.id} ({view.agent}) waits at `{view.step}`, request {view.request}:")
    echo(f"  {view.question}")  # `echo` escapes what could drive the terminal
    if (shown_value := value_line(view)) is not None:
        echo(shown_value)
    verb = "Approve" if approve else "Reject" if reject else "Answer"
    if not click.confirm(f"{verb} request {view.request}?", default=False):
        raise CommandError("nothing was decided")
    return view.request


@click.command()
@click.argument("thread")
@click.option(
    "--at",
    "at_event",
    type=int,
    required=True,
    help="Keep the first N events of THREAD (see `twelvefold show`).",
)
@AGENT
@DB
@JSON
def fork(thread: str, at_event: int, agent: str | None, db: StoreLocation, as_json: bool) -> None:
    """Start a new thread from the first N events of THREAD; it does not run until resumed.

    A fork made between steps is held (failed, ForkHeld) until `resume FORK --retry`.
    A fork never re-uses a decision or repeats a side effect: a fork inside a call an
    approval let run (after the approval, before the call's result) asks for a new one,
    a fork at a pause gets its own request and deadline (its notice is sent by the next
    `twelvefold expire`, or by the server's sweep), and another tool call in flight at the
    fork point is recorded as interrupted."""
    with runtime(db, quiet=True) as rt:
        view = rt.get(rt.fork(thread, at_event, agent=agent), agent=agent)
    if as_json:
        echo(json.dumps({**view.to_json(), "forked_from": thread}, ensure_ascii=False))
        return
    echo(f"forked thread {thread} after event {at_event} as {view.id}")
    print_view(view, db)


@click.command()
@click.argument("thread")
@click.option("--reason", required=True, help="Why the thread is ended (kept in its log).")
@click.option("--by", help="Who cancels it.")
@AGENT
@DB
@JSON
def cancel(
    thread: str, reason: str, by: str | None, agent: str | None, db: StoreLocation, as_json: bool
) -> None:
    """End THREAD on purpose: its pending request is withdrawn, and any later decision
    for it is refused. The log records who cancelled it, why, and from where."""
    with runtime(db, quiet=True) as rt:
        view = rt.cancel(thread, reason=reason, by=by, via=cli_via(), agent=agent)
    if as_json:
        echo(json.dumps(view.to_json(), ensure_ascii=False))
        return
    print_view(view, db)


@click.command()
@click.argument("thread")
@click.argument("type_name", metavar="TYPE")
@click.argument("value")
@click.option("--request", help="The pending request the event is for (refused if another).")
@click.option(
    "--idempotency-key", help="Deliver at most once: a second send with this key is dropped."
)
@click.option("--by", help="Who sends it (kept in the log).")
@AGENT
@PROMPTS
@DB
@model_options
@JSON
def send(
    thread: str,
    type_name: str,
    value: str,
    request: str | None,
    idempotency_key: str | None,
    by: str | None,
    agent: str | None,
    prompts: Path | None,
    db: StoreLocation,
    model: str | None,
    cassette: Path | None,
    record: Path | None,
    paths: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Deliver an outside event (VALUE: JSON of type TYPE) to THREAD and run it on.

    Refused, with nothing recorded, when TYPE is not one of the agent's types or VALUE
    does not fit it, or when the thread does not wait for a TYPE event now.
    """
    _check_model_flags(cassette, record)
    with (
        runtime(
            db,
            model=make_model(cassette, record, model),
            paths=paths,
            quiet=as_json,
            prompts=prompts,
        ) as rt,
        stopped_at(rt, thread),
    ):
        view = rt.send(
            thread, type_name, value, request=request, idempotency_key=idempotency_key,
            by=by, via=cli_via(), agent=agent,
        )  # fmt: skip
    finish(view, db, as_json)


@click.command()
@click.option(
    "--now",
    help="Judge deadlines as of this ISO 8601 time instead of the clock (UTC unless it says).",
)
@click.option(
    "--agent",
    "agents",
    type=PathText(),
    metavar="PATH",
    multiple=True,
    help="Load the threads of this agent (matched by its name) from PATH instead of the "
    "place each recorded, e.g. after the agent was moved (repeatable).",
)
@DB
@model_options
@JSON
def expire(
    now: str | None,
    agents: tuple[str, ...],
    db: StoreLocation,
    model: str | None,
    cassette: Path | None,
    record: Path | None,
    paths: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Time out the waiting threads past their step's `timeout`, and run them on; try
    again the notices no channel took.

    An approval nobody decided counts as a rejection; a question nobody answered is a
    failure of the human step; a request no notice ever reached fails its step
    (NotDelivered). Deadlines count from the pause. Run it from cron or a scheduler, every
    minute or so. Exits 3 when a request is still untold or was never delivered.
    """
    _check_model_flags(cassette, record)
    if now is not None:
        try:
            moment = as_moment(now)
        except ValueError as exc:
            raise click.BadParameter(
                f"not an ISO 8601 time in range: {shown(now)} ({exc})", param_hint="--now"
            ) from None
        ahead = moment - as_moment(None)
        if ahead.total_seconds() > 0:
            # Allowed (tests and rehearsals look ahead instead of sleeping), but never
            # silently: every wait it times out is timed out before its real deadline.
            click.echo(
                f"warning: --now {moment.isoformat()} is {ahead} ahead of the clock: "
                "waits are timed out before their real deadlines",
                err=True,
            )
    # Read (a cassette) or checked (where --record appends) whether or not there is a
    # store yet: a path it cannot use is refused the same way every time.
    chosen_model = make_model(cassette, record, model)
    if not store_exists(db):
        # Nothing has run there yet (cron may start before the first thread): nothing can
        # be past its deadline, but say which store was looked for, so a mistyped `--db`
        # does not pass for an empty one.
        click.echo(f"note: no store at {one_line(str(db))} yet", err=True)
        found: list[Expiry] = []
    else:
        with runtime(db, model=chosen_model, paths=paths, quiet=as_json) as rt:
            found = rt.expire(now, agents=agents)
    if as_json:
        echo(json.dumps([e.to_json() for e in found], ensure_ascii=False))
    elif not found:
        echo("no waiting thread is past its deadline")
    for expiry in found if not as_json else ():
        echo(expiry_line(expiry))
    untold = any(e.never_delivered or (e.view is not None and e.view.untold) for e in found)
    sys.exit(1 if any(e.problem is not None for e in found) else EXIT_UNTOLD if untold else 0)


ENDED = {
    "timer": "the sleep ended",  # its end is the point of a sleep: nothing timed out
    "event": "no event came before its timeout",
    "approval": "no decision came before its timeout",
    "answer": "no answer came before its timeout",
    "agent": "its sub-agent's thread was started or its end delivered",
}
"""What `expire` ended, by what the thread waited for (`Expiry.wait`)."""


def expiry_line(expiry: Expiry) -> str:
    """What became of one swept thread, in one line."""
    if isinstance(expiry.event, Notified):
        told = expiry.event
        head = f"thread {expiry.thread_id}: notice about `{expiry.step}` tried again"
        if told.delivered:
            return f"{head}, told {', '.join(told.channels) or 'nobody'}"
        return f"{head}, nobody was told: {'; '.join(told.failed)}"
    if expiry.event is None:  # nothing was recorded: the thread could not even be swept
        return f"thread {expiry.thread_id}: `{expiry.step}` could not be swept: {expiry.problem}"
    if expiry.wait is not None:
        head = f"thread {expiry.thread_id}: `{expiry.step}`: {ENDED[expiry.wait]}"
    elif isinstance(expiry.event, Rejected | StepFailed):  # made by hand: a timeout, as ever
        head = f"thread {expiry.thread_id}: `{expiry.step}` timed out"
    else:
        head = f"thread {expiry.thread_id}: `{expiry.step}` ran on"
    if expiry.never_delivered:
        head = f"thread {expiry.thread_id}: `{expiry.step}` was never delivered"
    if isinstance(expiry.event, Rejected):
        head += f", rejected ({expiry.event.comment})"
    elif isinstance(expiry.event, StepFailed):
        head += f", failed ({expiry.event.error})"
    if expiry.problem is not None:
        return f"{head}; could not go on: {expiry.problem}"
    assert expiry.view is not None
    view = expiry.view
    where = {"finished": "finished", "failed": f"failed at `{view.step}`"}.get(
        view.status, f"{view.status} at `{view.step}`"
    )
    return f"{head}; now {where}"


@click.command()
@click.option(
    "--status", type=click.Choice(["running", "waiting", "finished", "failed", "cancelled"])
)
@DB
@JSON
def threads(status: str | None, db: StoreLocation, as_json: bool) -> None:
    """List threads, most recently updated first."""
    store = open_store(db, create=False)
    try:
        found = store.threads(status)  # type: ignore[arg-type]
        spent = with_children(by_thread(store.usage_records()), store.child_links())
        damaged = damaged_rows(store)  # left out of `found`; said last, exit 1
    finally:
        store.close()
    _list_threads(db, found, spent, as_json)
    flag_damaged(db, damaged)


def _list_threads(
    db: StoreLocation, found: list[ThreadInfo], spent: dict[str, Totals], as_json: bool
) -> None:
    parked = _needing_a_person(db, found)
    if as_json:
        listed = [_info_json(i, spent.get(i.id, Totals())) for i in found]
        for entry in listed:
            entry["needs_a_person"] = parked.get(entry["thread_id"])
        echo(json.dumps(listed))
        return
    if not found:
        echo(f"no threads in {one_line(str(db))}")
        return
    rows = []
    for i in found:
        usage = spent.get(i.id, Totals())
        tokens = f"{usage.input_tokens + usage.output_tokens:,}" if usage.model_calls else "-"
        cost = usage.cost_text if usage.model_calls else "-"
        # Every field comes from the store: control characters (a newline would start a
        # row of its own) are printed escaped, as `stats` prints names.
        rows.append([shown(i.id), shown(i.agent), shown(i.status), shown(i.step), str(i.seq),
                     tokens, cost, shown(i.updated_at), shown(i.request or "-")])  # fmt: skip
    headings = ["THREAD", "AGENT", "STATUS", "STEP", "EVENTS", "TOKENS", "COST", "UPDATED",
                "REQUEST"]  # fmt: skip
    for line in table(headings, rows, least=[18, 14, 9, 16, 6, 9, 9, 27],
                      right=[False] * 4 + [True] * 3 + [False],
                      gaps=[" "] * 6 + ["  ", " "]):  # fmt: skip
        echo(line)
    for thread_id, why in parked.items():
        echo(f"{thread_id} needs a person: {shown(why)}")


def _needing_a_person(db: StoreLocation, found: list[ThreadInfo]) -> dict[str, str]:
    """On a PostgreSQL store, the running threads the workers found they cannot run
    (twelvefold/server/queue.py, `PARKED`), and why; empty elsewhere."""
    from twelvefold.runtime.store import StoreUrl

    if not isinstance(db, StoreUrl):
        return {}
    from twelvefold.server.queue import parked_now

    return parked_now(db.url, {i.id: i.seq for i in found if i.status == "running"})


def _info_json(info: ThreadInfo, usage: Totals) -> dict[str, Any]:
    return {
        "thread_id": info.id,
        "agent": info.agent,
        "origin": info.origin,
        "status": info.status,
        "step": info.step,
        "events": info.seq,
        "request": info.request,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
        "usage": usage.to_json(),
    }


@click.command()
@click.argument("thread")
@AGENT
@DB
@JSON
def show(thread: str, agent: str | None, db: StoreLocation, as_json: bool) -> None:
    """Print THREAD's event log and where it stands."""
    with runtime(db, quiet=True) as rt:
        loaded = rt.agent_of(thread, agent)
        view = rt.get(thread, agent=loaded)
        events = rt.events(thread, agent=loaded)
        codec = loaded.codec
        version = rt.store.info(thread).version
        pins = rt.store.pins(thread)
    if as_json:
        data = view.to_json()
        data["log"] = [codec.encode_event(e, redact=True) for e in events]
        data["version"] = version
        data["version_history"] = [dataclasses.asdict(pin) for pin in pins]
        echo(json.dumps(data, ensure_ascii=False))
        return
    moves = budget_moves(loaded, events)
    for seq, event in enumerate(events, start=1):
        for pin in pins:
            if pin.seq == seq - 1:
                echo(pin_line(pin))
        echo(event_line(seq, event))
        if seq in moves:
            echo(moves[seq])
    for pin in pins:
        if pin.seq >= len(events):
            echo(pin_line(pin))
    print_view(view, db)
    if version is not None:
        echo(f"  agent version {version[:16]}")


def budget_moves(agent: Agent, events: Sequence[Event]) -> dict[int, str]:
    """The lines `show` prints after the events whose tokens or cost spent a budget (by
    event number from 1): the reducer moved the thread then, and the log has no event
    of its own to say so. Found by replaying the log with `agent`'s reducer; a log it
    cannot replay (another version's, edited by hand) has none after that point."""
    spec = agent.spec
    if spec.max_cost is None and spec.max_tokens is None:
        return {}
    lines: dict[int, str] = {}
    module = agent.module
    state: State | None = None
    for seq, event in enumerate(events, start=1):
        try:
            if state is None:
                state = module.replay([event])
                continue
            after = module.reduce(state, event)
        except Exception:  # not this reducer's log: say nothing rather than guess
            return lines
        spent = spec.moved_by_budget(state, event, after)
        if spent is not None:
            lines[seq] = _budget_line(spent, spec, state, event)
        state = after
    return lines


def _budget_line(spent: Spent, spec: AgentSpec, before: State, event: Event) -> str:
    total = spec.spend(before, event)
    if spent.kind == "max_cost":
        used = f"${total.cost_usd:.4f} of ${spec.max_cost:.2f}"
    else:
        used = f"{total.tokens:,} of {spec.max_tokens:,} tokens"
    where = f"on to `{spent.target}`" if spent.target is not None else "the thread failed"
    return f"  -- {spent.kind} spent ({used}): {where}"


def pin_line(pin: Pin) -> str:
    """A move between agent versions, as `show` prints it among the events."""
    before = pin.from_version[:16] if pin.from_version else "none"
    who = f" by {pin.by}" if pin.by else ""
    return f"  -- migrated from agent version {before} to {pin.to_version[:16]} at {pin.at}{who}"
