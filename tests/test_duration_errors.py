"""A duration written another way gets a fix that is one (E001).

Found by a fuzzer (rt19 F15): `timeout 5min` was told to write `5s`, `timeout -5s` to
write `-5s` (what it said), and `timeout 1e3s` that `1` needs a unit. The help now reads
the whole word that was written.
"""

from __future__ import annotations

import pytest

from twelvefold.compiler.api import compile_text


def one_error(duration: str) -> tuple[str, str, int, int]:
    source = (
        "agent a { start t }\ntype T { x: string }\n"
        f'tool t -> T = "m:f" {{ next done timeout {duration} }}\nfinal done\n'
    )
    found = compile_text(source, "a.agent").diagnostics
    (problem,) = [d for d in found if d.is_error]
    assert problem.code == "E001", problem
    assert (problem.span.line, problem.span.column) == (3, 41), problem
    return problem.message, problem.help, problem.span.column, problem.span.end_column


@pytest.mark.parametrize(
    ("written", "message", "fix"),
    [
        ("5", "`5` needs a unit", "write `5s` for seconds (units: ms, s, m, h, d)"),
        ("1.", "`1.` needs a unit", "write `1s` for seconds (units: ms, s, m, h, d)"),
        ("5min", "`min` is not a unit of duration", "write `5m` (units: ms, s, m, h, d)"),
        ("2hours", "`hours` is not a unit of duration", "write `2h` (units: ms, s, m, h, d)"),
        ("3sec", "`sec` is not a unit of duration", "write `3s` (units: ms, s, m, h, d)"),
        ("1.5mins", "`mins` is not a unit of duration", "write `1.5m` (units: ms, s, m, h, d)"),
        ("1w", "`w` is not a unit of duration", "write `7d` (units: ms, s, m, h, d)"),
        (
            "5x",
            "`x` is not a unit of duration",
            "write the number with one of the units: ms, s, m, h, d, such as `5s`",
        ),
        (
            "1e999999s",
            "`1e999999s` is not a duration",
            "write the number in digits, with one of the units: ms, s, m, h, d",
        ),
        (
            "1e99999999999999999999999s",
            "`1e99999999999999999999999s` is not a duration",
            "write the number in digits, with one of the units: ms, s, m, h, d",
        ),
        ("-1e3s", "a duration cannot be negative", "write how long it is, such as `5s`"),
        ("-5s", "a duration cannot be negative", "write how long it is, such as `5s`"),
        ("1e3s", "`1e3s` is not a duration", "write `1000s` (a duration has no exponent)"),
        ("2.5e-1m", "`2.5e-1m` is not a duration", "write `0.25m` (a duration has no exponent)"),
    ],
)
def test_a_duration_written_another_way_is_told_the_right_spelling(
    written: str, message: str, fix: str
) -> None:
    said, helped, column, end = one_error(written)
    assert (said, helped) == (message, fix)
    assert end - column == len(written)  # the whole word is underlined
