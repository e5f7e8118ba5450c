"""The cron expressions a schedule takes (docs/server.md, "Schedules"): the five fields of
cron (minute hour day-of-month month day-of-week), each `*`, a number, a name (months
and days of the week), a range `N-M`, a step `*/S` or `N-M/S`, or a list of these; or one
of the macros (`@daily`, ...).

Checked here before croniter reads them: croniter takes much more (a sixth field of
seconds, a seventh of years, `L`, `W`, `#`, `?`, hashed `H` and random `R` values, ranges
that run backwards) and some of it never comes due (`0 0 30 2 *`), which croniter reports
only when asked for a time, in the scheduler's loop rather than at start.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cache

from croniter import croniter
from croniter.croniter import CroniterBadDateError, CroniterError

MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August",
               "September", "October", "November", "December")  # fmt: skip
LONGEST_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February: leap years


class Field:
    """One of the five fields: its name, its bounds and the names it takes."""

    def __init__(self, name: str, low: int, high: int, names: tuple[str, ...] = ()) -> None:
        self.name, self.low, self.high, self.names = name, low, high, names
        self.first = 1 if names is MONTHS else 0  # `jan` is 1, `sun` is 0

    def takes(self) -> str:
        named = f", a name (`{self.names[0]}`)" if self.names else ""
        return (
            f"a number from {self.low} to {self.high}{named}, `*`, a range (`N-M`),"
            " a step (`*/S`, `N-M/S`) or a list of these"
        )

    def value(self, word: str) -> int | None:
        if word.isdigit():  # ASCII digits only (str.isdigit takes other scripts' too)
            return int(word) if word.isascii() else None
        lowered = word.lower()
        return self.names.index(lowered) + self.first if lowered in self.names else None


FIELDS = (
    Field("minute", 0, 59),
    Field("hour", 0, 23),
    Field("day-of-month", 1, 31),
    Field("month", 1, 12, MONTHS),
    Field("day-of-week", 0, 7, DAYS),
)
LONGEST = 9
"""The most digits a number in a field may have (`0005` is 5; nothing needs more, and
Python refuses to read a number of more than 4,300 digits)."""
ITEM = re.compile(r"(?P<range>\*|(?P<low>[^-/]+)(?:-(?P<high>[^-/]+))?)(?:/(?P<step>[^/]*))?")


def cron_problem(cron: str, now: datetime | None = None) -> str | None:
    """Why a schedule cannot take `cron`, as the words that follow `cron = "..." ` in
    its one-line refusal; None when it can (and croniter finds a time it names after
    `now`)."""
    words = cron.split()
    if len(words) == 1 and words[0].startswith("@"):
        if words[0].lower() not in MACROS:
            return f"is not one of {', '.join(MACROS)}"
        return None
    if len(words) != len(FIELDS):
        return (
            f"is not a cron expression: it has {len(words)} fields, not five (minute hour"
            f" day-of-month month day-of-week, in UTC; no seconds, no year), or is one of"
            f" {', '.join(MACROS)}"
        )
    expanded: list[set[int]] = []
    for word, field in zip(words, FIELDS, strict=True):
        values = _expanded(word, field)
        if isinstance(values, str):
            return f"is not a cron expression: {values}"
        expanded.append(values)
    try:
        croniter(for_croniter(cron), now or datetime.now(UTC)).get_next(datetime)
    except CroniterBadDateError:
        days, months = sorted(expanded[2]), sorted(expanded[3])
        return f"never comes due: {_no_such_day(days, months)}"
    except (CroniterError, ValueError) as exc:  # nothing known reaches here: croniter's word
        return f"is not a cron expression croniter reads ({exc})"
    return None


@cache
def for_croniter(cron: str) -> str:
    """The expression croniter is given for `cron`, one `cron_problem` took (the
    schedule keeps and shows `cron` as written): each field `*` or the list of the
    numbers it names. croniter's own reading differs: it reads a range of one number
    (`30-30`) as `*`, takes a list holding `*` (`1,*`) or a whole week (`0-6`) as `*` in
    the rule for days (either the day of month or of week fires when neither is `*`),
    but not `1-31` or `*/1`."""
    words = cron.split()
    if len(words) != len(FIELDS):  # a macro
        return cron
    named: list[set[int]] = []
    for word, field in zip(words, FIELDS, strict=True):
        values = _expanded(word, field)
        if isinstance(values, str):
            raise ValueError(f"{cron!r}: {values}")
        named.append(values)
    named[4] = {day % 7 for day in named[4]}  # 7 is Sunday, as 0 is
    highest = [field.high for field in FIELDS[:4]] + [6]
    every = [
        values == set(range(field.low, high + 1))
        for values, field, high in zip(named, FIELDS, highest, strict=True)
    ]
    if words[2] != "*" and words[4] != "*" and (every[2] or every[4]):
        every[2] = every[4] = True  # either fires, and one fires every day
    return " ".join(
        "*" if whole else ",".join(map(str, sorted(values)))
        for values, whole in zip(named, every, strict=True)
    )


def _expanded(word: str, field: Field) -> set[int] | str:
    """The values one field names, or why it names none."""
    values: set[int] = set()
    for item in word.split(","):
        match = ITEM.fullmatch(item)
        if not item or match is None:
            return f"{field.name} `{word}` is not {field.takes()}"
        low, high = field.low, field.high
        too_long = _too_long(field, item, match)
        if too_long is not None:
            return too_long
        if match["range"] != "*":
            bounds = [field.value(match["low"])]
            if match["high"] is not None:
                bounds.append(field.value(match["high"]))
            if None in bounds or (match["step"] is not None and match["high"] is None):
                return f"{field.name} `{item}` is not {field.takes()}"
            numbers = [bound for bound in bounds if bound is not None]
            for number in numbers:
                if not field.low <= number <= field.high:
                    return f"{field.name} `{number}` is not from {field.low} to {field.high}"
            low, high = numbers[0], numbers[-1]
            if low > high:
                return f"{field.name} `{item}` runs backwards (a range goes from low to high)"
        step = 1
        if match["step"] is not None:
            if not (match["step"].isascii() and match["step"].isdigit()) or not int(match["step"]):
                return f"{field.name} `{item}` is not a step of 1 or more"
            step = int(match["step"])
        values.update(range(low, high + 1, step))
    return values


def _too_long(field: Field, item: str, match: re.Match[str]) -> str | None:
    """Why `item` is refused when a number in it has more than LONGEST digits (shown
    cut short, with its count of digits), before anything reads it; None when none has."""
    for part in ("low", "high", "step"):
        digits = match[part]
        if digits is None or len(digits) <= LONGEST or not (digits.isascii() and digits.isdigit()):
            continue
        cut = f"{digits[:10]}…` ({len(digits):,} digits)"
        if part == "step":
            return f"{field.name} `{match['range']}/{cut} is not a step of 1 or more"
        return f"{field.name} `{cut} is not from {field.low} to {field.high}"
    return None


def _no_such_day(days: list[int], months: list[int]) -> str:
    """Why days `days` of months `months` are no date (croniter found none)."""
    if not days or not months or any(days[0] <= LONGEST_MONTH[m - 1] for m in months):
        return "croniter finds no time it names"
    named = [MONTH_NAMES[month - 1] for month in months]
    day = "day " + (
        str(days[0]) if len(days) == 1 else ", ".join(map(str, days[:-1])) + f" or {days[-1]}"
    )
    if len(named) == 1:
        return f"{named[0]} has no {day}"
    if len(named) == 2:
        return f"neither {named[0]} nor {named[1]} has a {day}"
    return f"none of {', '.join(named)} has a {day}"
