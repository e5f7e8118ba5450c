"""Golden cases: each folder of tests/golden holds `input.agent` (and its prompts/) with the
expected module (`expected.py`) or the expected diagnostics (`expected.txt`). The examples'
modules are golden too (tests/golden/examples/NAME.py).

Review changes in the diff after `pytest tests/test_golden.py --update-golden`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from twelvefold.compiler import compile_file
from twelvefold.compiler.diagnostics import render_all

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p for p in GOLDEN.iterdir() if (p / "input.agent").exists())
EXAMPLES = sorted((ROOT / "examples").glob("*.agent"))


def _actual(agent: Path, prompts: Path) -> tuple[str, str]:
    """(file name, content): the generated module, or the rendered diagnostics."""
    result = compile_file(agent, prompts_dir=prompts, display_path=agent.name)
    if not result.ok:
        return "expected.txt", render_all(
            result.diagnostics, {agent.name: result.source_text}
        ) + "\n"
    ((_, module),) = result.files.items()
    return "expected.py", module


def _compare(expected: Path, actual: str, update: bool) -> None:
    if update:
        expected.write_text(actual)
    assert expected.exists(), f"{expected} is missing: run pytest with --update-golden"
    assert actual == expected.read_text(), f"{expected} differs: review, then --update-golden"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_case(case: Path, update_golden: bool) -> None:
    name, actual = _actual(case / "input.agent", case / "prompts")
    stale = {"expected.py", "expected.txt"} - {name}
    for other in stale:
        if update_golden:
            (case / other).unlink(missing_ok=True)
        assert not (case / other).exists(), f"{case.name} now produces {name}, not {other}"
    _compare(case / name, actual, update_golden)


@pytest.mark.parametrize("agent", EXAMPLES, ids=[a.stem for a in EXAMPLES])
def test_golden_example(agent: Path, update_golden: bool) -> None:
    name, actual = _actual(agent, ROOT / "prompts")
    assert name == "expected.py", actual
    _compare(GOLDEN / "examples" / f"{agent.stem}.py", actual, update_golden)


def test_output_is_byte_identical_across_runs() -> None:
    for agent in EXAMPLES:
        first = compile_file(agent, prompts_dir=ROOT / "prompts").files
        second = compile_file(agent, prompts_dir=ROOT / "prompts").files
        assert first == second
