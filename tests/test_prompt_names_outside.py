"""A prompt named by a link or a path that leads out of the prompts directory is told so
(E701), not called missing with a suggestion of another file.

Found by a fuzzer (rt19 F11): `prompt "link.j2"`, a link in prompts/ to a file outside
it, was said not to exist, and the help suggested "inc.j2"; `prompt "../outside.j2"`
was said not to exist too. The runtime refuses both (runtime/templates.py
`confined_file`); the message now says which rule refused the name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from twelvefold.compiler import compile_text
from twelvefold.compiler.prompts import PromptDirectory


def only_error(tmp_path: Path, prompt: str) -> tuple[str, str]:
    source = (
        "agent a { start d }\ntype T { x: string }\n"
        f'llm d -> T {{ prompt "{prompt}" on T -> done }}\nfinal done\n'
    )
    found = compile_text(source, "a.agent", load_prompt=PromptDirectory(tmp_path / "prompts"))
    (problem,) = [d for d in found.diagnostics if d.is_error]
    assert problem.code == "E701", problem
    return problem.message, problem.help


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    prompts = tmp_path / "prompts"
    (prompts / "sub").mkdir(parents=True)
    (prompts / "inc.j2").write_text("{{ context }}")
    (tmp_path / "outside.j2").write_text("{{ context }}")
    (prompts / "link.j2").symlink_to(tmp_path / "outside.j2")
    (prompts / "up").symlink_to(tmp_path)
    (prompts / "inside.j2").symlink_to(prompts / "inc.j2")
    return tmp_path


@pytest.mark.parametrize(
    ("prompt", "said"),
    [
        ("link.j2", "is a link to something outside the prompts directory"),
        ("up/outside.j2", "is a link to something outside the prompts directory"),
        ("../outside.j2", "leads out of the prompts directory with `..`"),
        ("sub/../inc.j2", "leads out of the prompts directory with `..`"),
        ("/etc/hostname", "is an absolute path"),
        ("sub", "is a folder, not a file"),
    ],
)
def test_a_name_the_runtime_would_refuse_says_why(folder: Path, prompt: str, said: str) -> None:
    message, fix = only_error(folder, prompt)
    assert message == f'prompt "{prompt}" {said}'
    assert "put the template itself in the prompts directory" in fix
    assert "did you mean" not in fix


def test_a_missing_name_is_still_missing_and_never_offered_a_link_that_leads_out(
    folder: Path,
) -> None:
    message, fix = only_error(folder, "lnk.j2")
    assert message == 'prompt "lnk.j2" does not exist'
    assert fix == 'did you mean "inc.j2"?', fix  # not "link.j2", which is refused


def test_a_link_that_stays_inside_is_a_prompt(folder: Path) -> None:
    source = (
        "agent a { start d }\ntype T { x: string }\n"
        'llm d -> T { prompt "inside.j2" on T -> done }\nfinal done\n'
    )
    found = compile_text(source, "a.agent", load_prompt=PromptDirectory(folder / "prompts"))
    assert not [d for d in found.diagnostics if d.is_error], found.diagnostics
