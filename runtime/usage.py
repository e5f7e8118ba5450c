"""What threads cost: prices per model, the cost of one model call, totals over a log.

Prices are US dollars per million tokens, input and output apart, from
`[tool.twelvefold.prices]` (or `[prices]` in twelvefold.toml) over `DEFAULT_PRICES`:

    [tool.twelvefold.prices]
    "gpt-4o-mini" = { input = 0.15, output = 0.60 }
    "my-local-model" = { input = 0, output = 0 }

A model is priced by its exact name, else by the longest priced name it starts with
followed by `-` (`gpt-4o-mini-2024-07-18` is priced as `gpt-4o-mini`). A model no entry
prices has no cost (`None`, shown as unknown), never a guessed one.

A price is at most `MAX_PRICE` per million tokens, and a call's cost is a valid one only
when it is a finite number from 0 to `MAX_CALL_COST` (`valid_cost`): the runtime records
no other (the step fails with `CostError`), and the reports count any other (a store
edited by hand) as unknown. Token counts are bounded the same way: a count is valid only
when it is a whole number from 0 to `MAX_CALL_TOKENS` (`valid_tokens`); the runtime
records no other (the step fails with `TokenCountError`) and the reports count any other
as unknown, whichever store they read.

Totals are computed from events (a loaded thread) or from the bare `(kind, at, usage)` of
stored rows (`twelvefold threads` and `stats`, which load no agent), by one function.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeGuard

from .config import Config, ConfigError, find_config, toml_key, toml_text
from .records import record
from .spec import TOKENS_ERROR
from .types import KIND_OF_EVENT, ErrorInfo, Event, Usage

PRICES_AS_OF = "2025-08"
"""When `DEFAULT_PRICES` were copied from the providers' public price lists."""

DEFAULT_PRICES: Mapping[str, tuple[float, float]] = {
    # model: (USD per million input tokens, USD per million output tokens). Approximate
    # list prices as of PRICES_AS_OF, without cached-input or batch discounts: set your
    # own in [tool.twelvefold.prices] for the prices you pay.
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "claude-opus-4": (15.00, 75.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
}


MAX_PRICE = 10_000.0
"""The highest price accepted, USD per million tokens (a cent a token): far above any
list price (the dearest, in 2025, is some hundreds), low enough that no realistic call
comes near `MAX_CALL_COST`."""
MAX_CALL_COST = 1_000_000.0
"""The highest cost one model call may record, USD (100 million tokens at `MAX_PRICE`):
above it a cost is an error (a price or a token count gone wrong), not a bill."""
MAX_CALL_TOKENS = 100_000_000
"""The most tokens one model call may record in each direction (input, output): a
hundred times the largest context windows offered in 2025 (one to two million tokens),
exact as a float (reports read counts out of JSON), and small enough that its cost at
`MAX_PRICE` stays within `MAX_CALL_COST`. Above it a count is an error, not a bill."""
PRICE_KEYS = frozenset({"input", "output"})


def valid_tokens(value: object) -> TypeGuard[int]:
    """Whether `value` is a token count a call may record: an int (not a bool) from 0 to
    `MAX_CALL_TOKENS`."""
    return type(value) is int and 0 <= value <= MAX_CALL_TOKENS


def token_count_error(usage: Usage) -> ErrorInfo | None:
    """The error that fails a step whose call reported a count that is not a
    `valid_tokens` (`TokenCountError`: its tokens and cost are then unknown), or None.
    The message quotes the counts cut short (10**400 has 401 digits)."""
    counts = usage.input_tokens, usage.output_tokens
    inputs, outputs = counts
    # Each count asked in turn (no generator per call: every model call asks).
    if (inputs is None or valid_tokens(inputs)) and (outputs is None or valid_tokens(outputs)):
        return None
    return ErrorInfo(
        TOKENS_ERROR,
        f"the endpoint reported a token count that is not a whole number from 0 to "
        f"{MAX_CALL_TOKENS:,} ({' and '.join(number_text(n) for n in counts)}): the call's "
        "tokens and cost are unknown (docs/runtime.md, Cost)",
    )


def number_text(value: object) -> str:
    """A reported number for a message: its repr, cut short past 20 characters."""
    text = repr(value)
    return text if len(text) <= 20 else f"{text[:8]}…({len(text)} characters)"


MAX_LATENCY_MS = 1e9
"""The longest call latency a reply may report, in milliseconds (about 11.6 days)."""


def valid_latency(value: object) -> TypeGuard[float]:
    """Whether `value` is a latency a model's reply may report, in milliseconds: a number
    (not a bool), finite, above 0 and at most `MAX_LATENCY_MS`. The loop measures the
    call itself otherwise: a NaN or an infinity would be stored as `NaN`, which JSON does
    not have (SQLite's JSON functions then skip the whole event: its tokens and cost went
    missing from every total)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and 0 < value <= MAX_LATENCY_MS  # (False for NaN)
    )


def valid_cost(value: object) -> TypeGuard[float]:
    """Whether `value` is a cost a call may record: a number (not a bool), finite, from 0
    to `MAX_CALL_COST` USD."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_CALL_COST
    )


@record(slots=True)
class Prices:
    """A price table: model name -> (input, output) USD per million tokens."""

    table: Mapping[str, tuple[float, float]]

    @classmethod
    def of(cls, config: Config) -> Prices:
        """`DEFAULT_PRICES` under the configuration's `prices` table; `ConfigError` when
        an entry is not `{ input = N, output = N }` with 0 <= N <= `MAX_PRICE`."""
        given = config.settings.get("prices", {})
        where = config.path or "the configuration"
        if not isinstance(given, Mapping):
            raise ConfigError(
                f"{where}: `prices` must be a table of model = {{ input, output }}, "
                f"not {toml_text(given)}"
            )
        table = dict(DEFAULT_PRICES)
        for model, entry in given.items():
            table[str(model)] = _price(where, str(model), entry)
        return cls(table)

    def price(self, model: str | None) -> tuple[float, float] | None:
        """The (input, output) price of `model`, by exact name then longest `name-` prefix."""
        if not model:
            return None
        found = self.table.get(model)
        if found is not None:
            return found
        best = max(
            (name for name in self.table if model.startswith(name + "-")), key=len, default=None
        )
        return None if best is None else self.table[best]

    def cost(self, model: str | None, usage: Usage) -> float | None:
        """USD for one call's tokens (rounded to 1e-9), or None: unpriced, or no tokens.
        Token counts too large for a float (an endpoint gone wrong) cost `inf`: not a
        `valid_cost`, which the loop refuses to record."""
        price = self.price(model)
        if price is None or (usage.input_tokens is None and usage.output_tokens is None):
            return None
        try:
            dollars = (
                (usage.input_tokens or 0) * price[0] + (usage.output_tokens or 0) * price[1]
            ) / 1e6
        except OverflowError:
            return math.inf
        return round(dollars, 9)


_READ: dict[Path, Prices] = {}
"""The prices read for each folder in this process (see `prices_for`)."""


def prices_for(folder: Path) -> Prices:
    """The prices in force for agents in `folder`: read from its configuration the first
    time this process asks (`ConfigError` if they are not valid: asked again next time),
    then kept. A price is a report, not a permission (unlike approvers, read at every
    decision), so a changed table takes effect when the process restarts."""
    found = _READ.get(folder)
    if found is None:
        found = _READ[folder] = Prices.of(find_config(folder))
    return found


def _price(where: object, model: str, entry: Any) -> tuple[float, float]:
    def refused(what: str) -> ConfigError:
        return ConfigError(
            f"{where}: {toml_key('prices', model)} must be {{ input = N, output = N }} in USD per "
            f"million tokens (N a number from 0 to {MAX_PRICE:,.0f}); {what}"
        )

    def number(key: str) -> float:
        value = entry.get(key) if isinstance(entry, Mapping) else None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 <= value <= MAX_PRICE
        ):
            raise refused(f"its `{key}` is " + ("missing" if value is None else toml_text(value)))
        return float(value)

    if isinstance(entry, Mapping) and (unknown := sorted(map(str, entry.keys() - PRICE_KEYS))):
        raise refused(f"it has unknown key(s) {', '.join(f'`{toml_key(k)}`' for k in unknown)}")

    return number("input"), number("output")


# ---- totals ------------------------------------------------------------------------

MODEL_STEPS = frozenset({"model_output", "output_rejected"})
"""Events that record a model call's tokens and cost: an output, and an output the checks
refused (with the judge's call, when a judge refused it): what the budgets count too. A
`step_failed` whose usage has token counts is a model call too (`paid_call`)."""
ACTION_STEPS = frozenset({"model_output", "tool_result", "step_failed"})
"""Events that end an action (a model or tool call, or its failure): a thread's steps."""
_WAIT_ENDS = frozenset({"approved", "rejected", "answered", "cancelled", "step_failed"})
"""Events that end a wait: a decision, a cancel, a timeout or an undelivered notice."""


@record(slots=True)
class Totals:
    """What one thread (or several, added up) cost so far."""

    steps: int = 0
    """Actions completed or failed (model calls, tool calls)."""
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    """The sum of the priced calls' costs (USD). None (JSON null, `?`) when model calls
    were made and none of them was priced: unknown, not zero; 0.0 when no model call was
    made (nothing was spent). `known_cost` is the rule, for every surface."""
    unpriced_calls: int = 0
    """Model calls whose cost is unknown (a model without a price, or no token counts):
    `cost_usd` leaves them out."""
    waited_seconds: float = 0.0
    """Time spent waiting for people: from each notice to the decision (or to `now` for
    a wait still open when the totals were taken)."""
    uncounted_input: int = 0
    """Model calls whose input token count is unknown (none recorded, or one that is not
    a `valid_tokens`: a store edited by hand): `input_tokens` leaves them out."""
    uncounted_output: int = 0
    """The same for output tokens."""

    def __add__(self, other: Totals) -> Totals:
        calls = self.model_calls + other.model_calls
        unpriced = self.unpriced_calls + other.unpriced_calls
        priced = (self.cost_usd or 0.0) + (other.cost_usd or 0.0)
        return Totals(
            self.steps + other.steps,
            calls,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            known_cost(priced, calls, unpriced),
            unpriced,
            self.waited_seconds + other.waited_seconds,
            self.uncounted_input + other.uncounted_input,
            self.uncounted_output + other.uncounted_output,
        )

    def to_json(self) -> dict[str, Any]:
        """The `usage` object of a thread's JSON (docs/runtime.md, "Cost")."""
        return {
            "steps": self.steps,
            "model_calls": self.model_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "unpriced_calls": self.unpriced_calls,
            "waited_seconds": round(self.waited_seconds, 3),
        }

    @property
    def cost_text(self) -> str:
        """`$0.0123`, `$0.0123+?` when some calls are unpriced, `?` when none is priced."""
        if self.cost_usd is None:
            return "?"
        return f"${self.cost_usd:.4f}" + ("+?" if self.unpriced_calls else "")

    @property
    def input_tokens_text(self) -> str:
        """`1,204`, or `1,204+?` when some calls' input counts are unknown (as `cost_text`)."""
        return f"{self.input_tokens:,}" + ("+?" if self.uncounted_input else "")

    @property
    def output_tokens_text(self) -> str:
        """`310`, or `310+?` when some calls' output counts are unknown."""
        return f"{self.output_tokens:,}" + ("+?" if self.uncounted_output else "")


def known_cost(priced: float, calls: int, unpriced: int) -> float | None:
    """What `calls` model calls cost, `unpriced` of them without a price, the others
    `priced` in all: unknown (None) when calls were made and none was priced; else the
    priced sum (0.0 for no call at all: nothing was spent)."""
    return None if calls and unpriced == calls else round(priced, 9)


def usage_text(usage: Totals) -> str | None:
    """`3 steps, 2 model calls, 1,204→310 tokens, $0.0004, waited 2.0 h` (what `show`
    and the inbox print); None before the first step."""
    if not usage.steps and not usage.waited_seconds:
        return None
    parts = [f"{usage.steps} step{'s' if usage.steps != 1 else ''}"]
    if usage.model_calls:
        parts.append(f"{usage.model_calls} model call{'s' if usage.model_calls != 1 else ''}")
        parts.append(f"{usage.input_tokens:,}→{usage.output_tokens:,} tokens")
        parts.append(usage.cost_text)
    if usage.waited_seconds:
        parts.append(f"waited {duration_text(usage.waited_seconds)}")
    return ", ".join(parts)


def duration_text(seconds: float) -> str:
    """`12 s`, `4.5 min`, `2.0 h`, `3.1 d`."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


Record = tuple[str, str | None, Usage | None]
"""One stored event as the totals see it: (kind, at, usage)."""


def records(events: Iterable[Event]) -> Iterable[Record]:
    return ((KIND_OF_EVENT[type(e)], e.at, e.usage) for e in events)


def own_records(rows: Iterable[Record]) -> list[Record]:
    """A log without what a fork copied: from its last `forked` event on (the whole log
    of a thread that is no fork). What the copied events record was spent by the thread
    they came from, and is counted there."""
    log = list(rows)
    for index in range(len(log) - 1, -1, -1):
        if log[index][0] == "forked":
            return log[index:]
    return log


def totals(rows: Iterable[Record], *, now: datetime | None = None) -> Totals:
    """Add up one thread's log. A timestamp that does not parse (a hand-edited log) makes
    that wait count as zero rather than fail, and a cost that is not a `valid_cost` counts
    as unknown (`unpriced_calls`): these are reports, not the log's truth."""
    steps = calls = tokens_in = tokens_out = unpriced = uncounted_in = uncounted_out = 0
    cost = waited = 0.0
    opened: datetime | None = None
    for kind, at, usage in rows:
        if kind in ACTION_STEPS:
            steps += 1
        if kind in MODEL_STEPS or (kind == "step_failed" and paid_call(usage)):
            calls += 1
            if usage is not None:
                tokens_in += _count(usage.input_tokens)
                tokens_out += _count(usage.output_tokens)
            uncounted_in += usage is None or not valid_tokens(usage.input_tokens)
            uncounted_out += usage is None or not valid_tokens(usage.output_tokens)
            if usage is not None and valid_cost(usage.cost_usd):
                cost += float(usage.cost_usd)
            else:
                unpriced += 1
        if kind == "notified" and opened is None:
            opened = _when(at)
        elif kind in _WAIT_ENDS and opened is not None:
            waited += _seconds(opened, _when(at))
            opened = None
    if opened is not None:
        waited += _seconds(opened, now or datetime.now(opened.tzinfo))
    return Totals(
        steps,
        calls,
        tokens_in,
        tokens_out,
        known_cost(cost, calls, unpriced),
        unpriced,
        waited,
        uncounted_in,
        uncounted_out,
    )


def by_thread(
    rows: Mapping[str, Iterable[Record]], *, now: datetime | None = None, own: bool = False
) -> dict[str, Totals]:
    """`totals` of each thread of a store's `usage_records()`; with `own`, of what each
    thread spent itself (`own_records`: a fork's copied events left out), so that adding
    them up (`twelvefold stats`) counts each call once."""
    if own:
        return {thread_id: totals(own_records(log), now=now) for thread_id, log in rows.items()}
    return {thread_id: totals(log, now=now) for thread_id, log in rows.items()}


def with_children(
    own: Mapping[str, Totals], links: Mapping[str, Sequence[str]]
) -> dict[str, Totals]:
    """Each thread's totals with those of its sub-agents' threads added (their children's
    too, down the line): what a parent's work cost in all. `links` maps a parent to the
    children both logs link it to (a store's `child_links()`); a thread's id says nothing
    (anyone may name a thread `a~b`). `twelvefold stats` adds up `own` instead: each call
    once."""
    found: dict[str, Totals] = {}

    def rolled(thread_id: str, seen: frozenset[str]) -> Totals:
        if thread_id in found:
            return found[thread_id]
        spent = own.get(thread_id, Totals())
        for child in links.get(thread_id, ()):
            if child not in seen:  # links are made by the runtime; a loop is a forged log
                spent = spent + rolled(child, seen | {child})
        found[thread_id] = spent
        return spent

    for thread_id in own:
        rolled(thread_id, frozenset({thread_id}))
    return found


def paid_call(usage: Usage | None) -> bool:
    """Whether a failed step's usage records a model call that was paid for: the endpoint
    replied with token counts (invalid output after every retry, a cut-off reply, a
    validator or judge that failed on a reply). A tool's failure or a model call that got
    no reply records a latency only."""
    return usage is not None and bool(_count(usage.input_tokens) or _count(usage.output_tokens))


def _count(value: object) -> int:
    """A recorded count as reports add it: a `valid_tokens`, else 0 (unknown)."""
    return value if valid_tokens(value) else 0


def _when(at: str | None) -> datetime | None:
    if not isinstance(at, str):
        return None
    try:
        return datetime.fromisoformat(at)
    except ValueError:
        return None


def _seconds(start: datetime | None, end: datetime | None) -> float:
    if start is None or end is None:
        return 0.0
    try:
        return max(0.0, (end - start).total_seconds())
    except TypeError:  # one with a time zone, one without (edited by hand)
        return 0.0


__all__ = [
    "DEFAULT_PRICES",
    "MAX_CALL_COST",
    "MAX_CALL_TOKENS",
    "MAX_PRICE",
    "PRICES_AS_OF",
    "Prices",
    "Totals",
    "by_thread",
    "duration_text",
    "number_text",
    "own_records",
    "prices_for",
    "records",
    "token_count_error",
    "totals",
    "usage_text",
    "valid_cost",
    "valid_tokens",
    "with_children",
]
