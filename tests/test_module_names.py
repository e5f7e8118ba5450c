"""An agent's name is its module's file name: a name that makes a file Python cannot
import (`class.py`) or one that Python, pytest or packaging treat specially
(`__init__.py`, `conftest.py`, `setup.py`) is refused (E122), and so is a tool in such a
module (E118): `"__main__:main"` is the program that is running, not a tool."""

from __future__ import annotations

from pathlib import Path

import pytest

from twelvefold.compiler import PromptFile, compile_text
from twelvefold.compiler.api import Compilation
from twelvefold.runtime.config import special_module
from twelvefold.runtime.tools import ToolBox, ToolImportError

AGENT = """agent NAME { start decide }
type Done { message: string }
llm decide -> Done { prompt "ok.j2" on Done -> done }
final done(Done)
"""


def _compile(name: str) -> Compilation:
    def prompt(file: str) -> PromptFile:
        return PromptFile(name=file, path=Path(file), text="{{ context }}")

    return compile_text(AGENT.replace("NAME", name), "a.agent", load_prompt=prompt)


REFUSED = ["__init__", "__main__", "sitecustomize", "usercustomize", "conftest", "setup",
           "class", "None", "import", "__x__"]  # fmt: skip


@pytest.mark.parametrize("name", REFUSED)
def test_an_agent_named_like_a_special_or_unimportable_module_is_refused(name: str) -> None:
    result = _compile(name)
    (found,) = [d for d in result.diagnostics if d.is_error]
    assert found.code == "E122" and (found.span.line, found.span.column) == (1, 7)
    assert f"`{name}.py`" in found.message
    assert f"`{name.strip('_')}_agent`" in found.help
    assert result.files == {}


@pytest.mark.parametrize("name", ["match", "type", "json", "agent_setup", "my_conftest"])
def test_other_names_compile(name: str) -> None:
    result = _compile(name)
    assert result.ok, [d.message for d in result.diagnostics]


@pytest.mark.parametrize(
    "reference", ["__main__:main", "sitecustomize:f", "pkg.__init__:f", "pkg.__main__:main"]
)
def test_the_runtime_refuses_a_tool_in_a_special_module(reference: str) -> None:
    assert special_module(reference) is not None
    with pytest.raises(ToolImportError, match="names `"):
        ToolBox().resolve(reference)


@pytest.mark.parametrize("name", ["Conftest", "SETUP", "SiteCustomize", "__Main__"])
def test_a_special_module_name_is_refused_whatever_its_case(name: str) -> None:
    """Found by a red team: on macOS's and Windows's file systems `Conftest.py` is the
    file `conftest.py`, which pytest runs."""
    (found,) = [d for d in _compile(name).diagnostics if d.is_error]
    assert found.code == "E122"
