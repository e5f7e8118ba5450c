"""docs/runtime.md's "The Python API" example runs as written, from a checkout.

It is read from the page and run, statement by statement, in a folder that has the
checkout's examples/ and prompts/, as a user who copies it would; the values the page
shows for the first view are the ones it has.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def example() -> str:
    page = (ROOT / "docs" / "runtime.md").read_text(encoding="utf-8")
    section = page.split("\n## The Python API\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_python_api_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "prompts").symlink_to(ROOT / "prompts")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code = example()
    lines = code.splitlines()
    names: dict[str, Any] = {}
    values: dict[int, Any] = {}  # an expression statement's line -> its value
    for node in ast.parse(code).body:
        if isinstance(node, ast.Expr):
            expression = ast.Expression(node.value)
            values[node.lineno] = eval(compile(expression, "docs/runtime.md", "eval"), names)
        else:
            exec(compile(ast.Module([node], []), "docs/runtime.md", "exec"), names)

    assert (tmp_path / "threads.db").exists()
    view = names["view"]
    assert view.status == "finished" and view.output.message.startswith("Deployed v1.2.3")
    assert names["rt"].get(names["fork_id"]).status == "cancelled"
    # The tuple the page shows under the first `view.status, ...` is what the launch gave.
    first = next(i for i, line in enumerate(lines) if line.startswith("view.status, view.step"))
    shown = ast.literal_eval(re.sub(r"^\s*#\s*", "", lines[first + 1]))
    assert values[first + 1] == shown
