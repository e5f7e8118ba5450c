"""Cassettes: a run's model outputs recorded to a file, and replayed with no network.

A cassette is a JSON-lines file, one model call per line, in the order the calls happened:

    {"agent": "deploybot", "step": "decide", "seq": 1, "type": "ListGitTags", "output": {}}
    {"agent": "deploybot", "step": "decide", "seq": 3, "type": "DeployBackend",
     "output": {"tag": "v1.2.3", "env": "production"}, "messages_sha256": "9f2c..."}

`type` names one of the step's output types and `output` is its value; a call that failed
is recorded as `"error": {"type": ..., "message": ...}` instead and replays as that failure.
`usage` (`{"input_tokens": ..., "output_tokens": ...}`, when the endpoint reported them,
for a failed call what its attempts were paid for) replays as the call's token counts, so
a replay shows the recorded tokens, the runtime prices them, and budgets are spent as they
were; an entry without it replays as a call of unknown tokens. `messages_sha256` is for
information only (it shows when a prompt changed); replay ignores it.

The matching rule. A call is answered by the entry with the same agent, step and `seq` (the
thread's event count when the call was made), so a run and its later resumes, in separate
processes, replay the same way. An entry without `seq` (written by hand) answers the calls
of its agent and step that no `seq` entry answers, in file order. When several entries
claim the same call, the last one wins (re-recording appends). A call that nothing answers
fails with `CassetteMiss`, which names the step: a model error, so the step fails as it
would with a model that cannot be reached.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .localfiles import json_kind, parse_json, read_regular_file
from .model import Model, ModelError, ModelReply, ModelRequest, StopsTheRun
from .names import declared_name
from .redact import validation_problems
from .strict import ParsedJson, strictly
from .types import ErrorInfo, Usage
from .usage import MAX_CALL_TOKENS, valid_tokens


class CassetteError(Exception):
    """The cassette file cannot be read, or cannot answer a call."""


class CassetteCannotAnswer(CassetteError, ModelError):
    """The cassette cannot answer this model call. To the run it is a model that could
    not answer (`ModelError`, as an endpoint that cannot be reached): the step fails, in
    the thread's log, and the thread goes on as its agent says (an `on error` edge, its
    `max_errors`) or fails; never an exception out of the run, which a server would log
    as a traceback and leave the thread `running`. `resume --retry` with a cassette that
    answers runs the step again."""

    def __init__(self, message: str) -> None:
        ModelError.__init__(self, ErrorInfo(type(self).__name__, message))


class RecordFailed(OSError, StopsTheRun):
    """A `CassetteRecorder` could not append to its cassette (a full disk): the run stops
    with one line naming the file, the thread left at the step as after a crash (its
    output was not recorded, so a resume calls the model again), not a step failure."""


class CassetteMiss(CassetteCannotAnswer):
    """No entry of the cassette answers this model call."""


class CassetteEntryInvalid(CassetteCannotAnswer):
    """The entry that answers this call holds what the step cannot output (an edited
    cassette): as a model's invalid output."""


@dataclass(frozen=True, slots=True)
class Entry:
    agent: str
    step: str
    seq: int | None
    type: str | None
    output: Any
    error: ErrorInfo | None
    line: int
    usage: Usage | None = None
    """The recorded token counts (either may be None: not recorded)."""


def messages_digest(messages: list[dict[str, str]]) -> str:
    encoded = json.dumps(messages, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


def entry_json(
    request: ModelRequest,
    reply: ModelReply | None,
    error: ErrorInfo | None,
    paid: Usage | None = None,
) -> str:
    """One cassette line for a call and its outcome (`paid`: a failed call's usage)."""
    record: dict[str, Any] = {
        "agent": request.agent.name,
        "step": request.action.step,
        "seq": request.seq,
    }
    if reply is not None:
        record["type"] = declared_name(type(reply.output))
        record["output"] = reply.output.model_dump(mode="json", by_alias=True)
    if error is not None:
        record["error"] = {"type": error.type, "message": error.message}
    usage = reply.usage if reply is not None else paid
    counts = {} if usage is None else {
        "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens
    }  # fmt: skip
    if any(valid_tokens(count) for count in counts.values()):
        record["usage"] = {name: n for name, n in counts.items() if valid_tokens(n)}
    record["messages_sha256"] = messages_digest(request.messages)
    return json.dumps(record, ensure_ascii=False)


def read_cassette(path: Path) -> list[Entry]:
    """The entries of the cassette at `path`, each checked for its shape: a line that is
    not a cassette entry, or a file that is not UTF-8, is refused with `CassetteError`
    naming the line; a path that is not a regular file (a FIFO would block the read) is
    the `OSError` naming it (`read_regular_file`)."""
    try:
        text = read_regular_file(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CassetteError(f"{path}: not a cassette (not UTF-8 text: {exc.reason})") from None
    entries = []
    # Lines end at "\n" (and "\r\n") only: JSON text may hold a raw U+2028 or U+0085,
    # where `str.splitlines` would cut an entry in two.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            record = parse_json(line, path, number)
        except ValueError as exc:
            raise CassetteError(f"{path}:{number}: not a cassette entry ({exc})") from None
        except RecursionError:  # JSON nested deeper than Python's stack
            raise CassetteError(
                f"{path}:{number}: not a cassette entry (its JSON is nested too deeply)"
            ) from None
        problem = _entry_problem(record)
        if problem is not None:
            raise CassetteError(f"{path}:{number}: not a cassette entry ({problem})")
        error = record.get("error")
        usage = record.get("usage")
        paid = (
            Usage(input_tokens=usage.get("input_tokens"), output_tokens=usage.get("output_tokens"))
            if usage
            else None
        )
        entries.append(
            Entry(
                agent=record["agent"],
                step=record["step"],
                seq=record.get("seq"),
                type=record.get("type"),
                output=record.get("output"),
                error=ErrorInfo(error["type"], error.get("message", "")) if error else None,
                line=number,
                usage=paid,
            )
        )
    return entries


def _entry_problem(record: Any) -> str | None:
    """What is wrong with the shape of one decoded cassette line, or None: an object with
    a string `agent` and `step`, an integer `seq` (or none), and either a string `type`
    and an `output` (an answer) or an `error` object with a string `type` and `message`
    (a failure)."""
    if not isinstance(record, dict):
        return f"a JSON {json_kind(record)}, not an object"
    for field in ("agent", "step"):
        if field not in record:
            return f"no `{field}`"
        if not isinstance(record[field], str):
            return f"`{field}` is a JSON {json_kind(record[field])}, not a string"
    seq = record.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
        return f"`seq` is a JSON {json_kind(seq)}, not an integer"
    for field in ("type", "messages_sha256"):
        value = record.get(field)
        if value is not None and not isinstance(value, str):
            return f"`{field}` is a JSON {json_kind(value)}, not a string"
    problem = _usage_problem(record.get("usage"))
    if problem is not None:
        return problem
    error = record.get("error")
    if error is None:  # an answer: what the step output, never a default in its place
        for field in ("type", "output"):
            if field not in record:
                return f"no `{field}` (an answer has `type` and `output`; a failure, `error`)"
    else:
        if not isinstance(error, dict):
            return f"`error` is a JSON {json_kind(error)}, not an object"
        if not isinstance(error.get("type"), str):
            return "`error` has no string `type`"
        if not isinstance(error.get("message", ""), str):
            return f"`error.message` is a JSON {json_kind(error['message'])}, not a string"
    return None


def _usage_problem(usage: Any) -> str | None:
    """What is wrong with an entry's `usage`, or None: absent, or an object with only
    `input_tokens` and `output_tokens`, each a token count the runtime would record."""
    if usage is None:
        return None
    if not isinstance(usage, dict):
        return f"`usage` is a JSON {json_kind(usage)}, not an object"
    for field in usage:
        if field not in ("input_tokens", "output_tokens"):
            return f"`usage` has `{field}`: it holds `input_tokens` and `output_tokens` only"
        if not valid_tokens(usage[field]):
            return f"`usage.{field}` is not a token count (a whole number, 0 to {MAX_CALL_TOKENS})"
    return None


class CassettePlayer:
    """A `Model` that answers from a cassette file and never touches the network."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        entries = read_cassette(self.path)
        self._by_seq: dict[tuple[str, str, int], Entry] = {}
        self._in_order: defaultdict[tuple[str, str], deque[Entry]] = defaultdict(deque)
        for entry in entries:
            if entry.seq is None:
                self._in_order[(entry.agent, entry.step)].append(entry)
            else:
                self._by_seq[(entry.agent, entry.step, entry.seq)] = entry
        self._recorded = entries

    async def complete(self, request: ModelRequest) -> ModelReply:
        entry = self._find(request)
        if entry.error is not None:
            raise ModelError(entry.error, entry.usage)
        usage = entry.usage or Usage()
        replayed = Usage(
            latency_ms=0.0, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens
        )
        return ModelReply(self._output(request, entry), replayed)

    def _find(self, request: ModelRequest) -> Entry:
        agent, step = request.agent.name, request.action.step
        entry = self._by_seq.get((agent, step, request.seq))
        if entry is not None:
            return entry
        queue = self._in_order.get((agent, step))
        if queue:
            return queue.popleft()
        recorded = sorted(
            e.seq for e in self._recorded if (e.agent, e.step) == (agent, step) and e.seq
        )
        has = f"it has `{step}` at seq {recorded}" if recorded else f"it has no `{step}` calls"
        raise CassetteMiss(
            f"cassette {self.path} has no answer for step `{step}` of agent `{agent}` "
            f"at seq {request.seq} (thread {request.thread_id}); {has}. "
            "Re-record it with --record, or add an entry."
        )

    def _output(self, request: ModelRequest, entry: Entry) -> BaseModel:
        outputs = {declared_name(t): t for t in request.action.outputs}
        declared = outputs.get(entry.type or "")
        where = f"{self.path}:{entry.line}"
        if declared is None:
            raise CassetteEntryInvalid(
                f"{where}: step `{entry.step}` cannot output `{entry.type}`; "
                f"it outputs {' | '.join(outputs)}"
            )
        try:
            # Held to the model's own rule (runtime/strict.py): replayed, it is one.
            validated: BaseModel = strictly(declared, ParsedJson(entry.output))
            return validated
        except ValidationError as exc:
            raise CassetteEntryInvalid(
                f"{where}: invalid `{entry.type}` output: {validation_problems(exc)}"
            ) from exc


class CassetteRecorder:
    """A `Model` that passes calls to a real one and appends each outcome to a cassette."""

    def __init__(self, model: Model, path: Path | str) -> None:
        """Refused before any call is made, as --cassette is: an `OSError` naming `path`
        when something other than a regular file is there (a folder; a FIFO with no reader
        would hang the run after its first call, a device swallow or refuse what is
        written) or a link to nothing (the write would fail mid-run, or make a file
        elsewhere); `CassetteError` when the file there is not a cassette (calls are
        appended: to an empty file or a cassette only, never to another file, a thread
        store say)."""
        self.model = model
        self.path = Path(path)
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            if os.path.islink(self.path):
                raise OSError(
                    errno.ENOENT,
                    "a link to nothing (give a new file, or a link to a cassette)",
                    str(self.path),
                ) from None
            return
        if stat.S_ISDIR(found.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(self.path))
        if not stat.S_ISREG(found.st_mode):
            raise _not_regular(self.path)
        try:
            read_cassette(self.path)
        except CassetteError as exc:
            raise CassetteError(
                f"{exc}; --record appends to a cassette only: give a new file, an empty"
                " one, or a cassette"
            ) from None

    async def complete(self, request: ModelRequest) -> ModelReply:
        try:
            reply = await self.model.complete(request)
        except ModelError as exc:
            self._append(entry_json(request, None, exc.error, exc.usage))
            raise
        self._append(entry_json(request, reply, None))
        return reply

    async def aclose(self) -> None:
        """Close the recorded model's connection pool (`OpenAIModel.aclose`)."""
        close = getattr(self.model, "aclose", None)
        if close is not None:
            await close()

    def _append(self, line: str) -> None:
        # Appended and flushed per call, so a run that crashes keeps what it recorded.
        # Opened without blocking (a FIFO put at the name since the start is not waited
        # on), and a failure to write (a full disk) names the file.
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0)
            fd = os.open(self.path, flags, 0o666)
            with os.fdopen(fd, "ab") as file:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise _not_regular(self.path)
                file.write((line + "\n").encode("utf-8"))
        except OSError as exc:
            if isinstance(exc, RecordFailed):
                raise
            filename = str(self.path) if exc.filename is None else exc.filename
            raise RecordFailed(exc.errno, exc.strerror or str(exc), filename) from exc


def _not_regular(path: Path) -> RecordFailed:
    return RecordFailed(
        errno.EINVAL,
        "not a regular file (a FIFO or a device is never recorded to; give a file)",
        str(path),
    )
