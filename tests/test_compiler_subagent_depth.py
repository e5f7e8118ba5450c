"""Sub-agents nest at most `CHAIN_LIMIT` levels: a deeper chain is refused as too deep,
not reported as a cycle it is not (E134 covers both; a red-team finding)."""

from __future__ import annotations

from pathlib import Path

from twelvefold.compiler import compile_file
from twelvefold.compiler.linking import CHAIN_LIMIT

TYPE = "type Ask { q: string }\n"


def chain(folder: Path, length: int) -> Path:
    """d1.agent calls d2.agent … up to d{length}.agent, which only finishes."""
    for i in range(1, length + 1):
        if i == length:
            body = f"agent d{i} {{ input Ask start done }}\nfinal done(Ask)\n"
        else:
            body = (
                f"agent d{i} {{ input Ask start call }}\n"
                f'agent call(Ask) -> Ask = "d{i + 1}.agent" {{ next done }}\n'
                "final done(Ask)\n"
            )
        (folder / f"d{i}.agent").write_text(TYPE + body)
    return folder / "d1.agent"


def test_a_chain_as_deep_as_the_limit_compiles(tmp_path: Path) -> None:
    result = compile_file(chain(tmp_path, CHAIN_LIMIT), generate_code=False)
    assert result.ok, [d.message for d in result.diagnostics]


def test_a_deeper_chain_is_too_deep_not_a_cycle(tmp_path: Path) -> None:
    result = compile_file(chain(tmp_path, CHAIN_LIMIT + 3), generate_code=False)
    messages = [d.message for d in result.diagnostics if d.code == "E134"]
    assert messages, [d.message for d in result.diagnostics]
    assert all("levels deep" in m and "calls it back" not in m for m in messages), messages
