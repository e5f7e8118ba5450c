"""`twelvefold check` and `twelvefold compile` as a user runs them: output, files, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TWELVEFOLD = [sys.executable, "-m", "twelvefold"]

BROKEN = """agent a { start decide max_steps 5 }
type Out { v: int }
llm decide -> Out { prompt "p.j2" on Out -> dnoe }
final done(Out)
"""


def run(*arguments: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TWELVEFOLD, *arguments], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_check_passes_on_the_examples() -> None:
    result = run("check", "examples/deploybot.agent", "examples/calculator.agent")
    assert result.returncode == 0, result.stderr
    assert "ok: 2 files checked" in result.stderr


def test_check_reports_every_error_with_a_caret_and_help(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    agent = tmp_path / "a.agent"
    agent.write_text(BROKEN)
    result = run("check", str(agent))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    # Sorted by position; both errors are reported, not just the first.
    assert lines[0] == f'{agent}:3:28: error[E701]: prompt "p.j2" does not exist'
    assert f"{agent}:3:45: error[E104]: `decide` goes to `dnoe`, which is not a state" in lines
    assert any(line.strip().startswith("|") and "^" in line for line in lines)
    assert "did you mean `done`?" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_json_gives_the_same_diagnostics_as_data(tmp_path: Path) -> None:
    agent = tmp_path / "a.agent"
    agent.write_text(BROKEN)
    result = run("check", "--format", "json", "--prompts", str(tmp_path), str(agent))
    assert result.returncode == 1
    found = {(d["code"], d["line"], d["column"]) for d in json.loads(result.stdout)}
    assert ("E104", 3, 45) in found and ("E701", 3, 28) in found


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("check").returncode == 2
    assert run("check", str(tmp_path / "missing.agent")).returncode == 1  # input: E008
    assert run("compile", "--format", "yaml", "examples/deploybot.agent").returncode == 2


def test_compile_writes_one_module_per_agent(tmp_path: Path) -> None:
    result = run(
        "compile", "examples/deploybot.agent", "examples/calculator.agent", "-o", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calculator.py", "deploybot.py"]
    expected = (ROOT / "tests" / "golden" / "examples" / "deploybot.py").read_text()
    written = (tmp_path / "deploybot.py").read_text()
    # The golden module, and where its templates are, relative to the folder written to
    # (docs/language.md, "The generated module").
    prompts = Path(os.path.relpath(ROOT / "prompts", tmp_path.resolve())).as_posix()
    block = re.compile(r'\nPROMPTS = "([^"]*)"\n""".*?"""\n', re.DOTALL)
    found = block.search(written)
    assert found is not None and found.group(1) == prompts
    assert block.sub("", written) == expected


def test_compile_writes_nothing_when_there_are_errors(tmp_path: Path) -> None:
    agent = tmp_path / "a.agent"
    agent.write_text(BROKEN)
    out = tmp_path / "out"
    assert run("compile", str(agent), "-o", str(out)).returncode == 1
    assert not out.exists()


def test_check_and_compile_never_import_the_tools(tmp_path: Path) -> None:
    # A tool module with a side effect on import: the compiler must not run user code.
    package = tmp_path / "evil"
    package.mkdir()
    (package / "__init__.py").write_text("")
    marker = tmp_path / "imported"
    (package / "tools.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef f(x): ...\n")
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "p.j2").write_text("{{ context }}")
    agent = tmp_path / "a.agent"
    agent.write_text(
        "agent a { start decide max_steps 5 }\ntype Out { v: int }\n"
        'llm decide -> Out { prompt "p.j2" on Out -> act }\n'
        'tool act(Out) -> Out = "evil.tools:f" { next done }\nfinal done(Out)\n'
    )
    assert run("check", str(agent), cwd=tmp_path).returncode == 0
    assert run("compile", str(agent), "-o", str(tmp_path / "out"), cwd=tmp_path).returncode == 0
    assert not marker.exists()
    # The marker does work: importing the module the way the runtime would creates it.
    subprocess.run([sys.executable, "-c", "import evil.tools"], cwd=tmp_path, check=True)
    assert marker.exists()


_WITHOUT_RUFF = """
import sys
sys.modules["ruff"] = None  # an environment where ruff is not installed
from twelvefold.cli import main
main()
"""


@pytest.mark.parametrize("command", ["compile", "run"])
def test_generation_fails_cleanly_without_ruff_rather_than_writing_an_unformatted_module(
    command: str, tmp_path: Path
) -> None:
    agent = Path(__file__).resolve().parents[1] / "examples" / "deploybot.agent"
    arguments = {
        "compile": ["compile", str(agent), "-o", str(tmp_path / "out")],
        "run": ["run", str(agent), "--input", "hi", "--db", str(tmp_path / "t.db")],
    }[command]
    result = subprocess.run(  # cwd: a fresh .twelvefold/cache, so `run` has to compile
        [sys.executable, "-c", _WITHOUT_RUFF, *arguments],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "ruff is not installed" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_compile_check_passes_on_fresh_modules_and_writes_nothing(tmp_path: Path) -> None:
    agents = ["examples/deploybot.agent", "examples/calculator.agent"]
    out = tmp_path / "gen"
    assert run("compile", *agents, "-o", str(out)).returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = run("compile", "--check", *agents, "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "ok: 2 modules up to date" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        # AGENT edited by hand: the module now disagrees with its .agent file.
        (lambda text: text.replace("max_steps=24", "max_steps=25"), "its AGENT disagrees with"),
        (lambda text: text.replace("requires_approval=", "requires_approval=None and "), "AGENT"),
        # Code edited, AGENT intact: still stale.
        (lambda text: text.replace('"production"', '"staging"', 1), "differs from what"),
        (lambda text: text + "\n", "differs from what"),
        (lambda text: "", "AGENT"),
    ],
)
def test_compile_check_fails_on_a_stale_or_edited_module(
    tmp_path: Path, edit: object, reason: str
) -> None:
    out = tmp_path / "gen"
    assert run("compile", "examples/deploybot.agent", "-o", str(out)).returncode == 0
    module = out / "deploybot.py"
    assert callable(edit)
    module.write_text(edit(module.read_text()))
    result = run("compile", "--check", "examples/deploybot.agent", "-o", str(out))
    assert result.returncode == 1
    assert f"stale: {module}" in result.stderr and reason in result.stderr, result.stderr


def test_compile_check_fails_on_a_missing_module(tmp_path: Path) -> None:
    result = run("compile", "--check", "examples/deploybot.agent", "-o", str(tmp_path))
    assert result.returncode == 1
    assert f"missing: {tmp_path / 'deploybot.py'}" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["hand-written", "link"])
def test_compile_never_replaces_a_file_it_did_not_generate(tmp_path: Path, kind: str) -> None:
    """`compile -o .` beside a hand-written `deploybot.py` (say, the agent's own tools),
    or a `deploybot.py` that links elsewhere: refused in one line, nothing written."""
    out = tmp_path / "out"
    out.mkdir()
    precious = tmp_path / "precious.py"
    precious.write_text("def act() -> str:\n    return 'mine'\n")
    target = out / "deploybot.py"
    if kind == "link":
        target.symlink_to(precious)
    else:
        target.write_text(precious.read_text())
    result = run("compile", "examples/deploybot.agent", "-o", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "deploybot.py" in result.stderr
    assert precious.read_text() == "def act() -> str:\n    return 'mine'\n"
    assert target.read_text() == precious.read_text()


def test_compile_replaces_a_module_it_generated(tmp_path: Path) -> None:
    assert run("compile", "examples/deploybot.agent", "-o", str(tmp_path)).returncode == 0
    (tmp_path / "deploybot.py").write_text(
        (tmp_path / "deploybot.py").read_text().replace("Deploys", "Edited")
    )
    assert run("compile", "examples/deploybot.agent", "-o", str(tmp_path)).returncode == 0
    assert "Edited" not in (tmp_path / "deploybot.py").read_text()


def _file_size_limit(most: int) -> None:
    """In the child: files it writes stop at `most` bytes (a full disk, made certain)."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (most, most))


def test_a_module_write_cut_short_leaves_the_module_before_it(tmp_path: Path) -> None:
    """A review found `compile -o` wrote modules in place: a write that stopped halfway
    (a full disk, a kill) left the first part of the new module where the old one was."""
    agent = tmp_path / "deploybot.agent"
    source = (ROOT / "examples" / "deploybot.agent").read_text()
    agent.write_text(source)
    out = tmp_path / "out"
    assert run("compile", str(agent), "-o", str(out)).returncode == 0
    before = (out / "deploybot.py").read_bytes()
    agent.write_text(source.replace('"Deploys', '"' + "Deploys, at length. " * 200, 1))
    most = len(before) + 100
    result = subprocess.run(
        [*TWELVEFOLD, "compile", str(agent), "-o", str(out)],
        cwd=ROOT, capture_output=True, text=True, preexec_fn=lambda: _file_size_limit(most),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "cannot write to" in result.stderr, result.stderr
    assert (out / "deploybot.py").read_bytes() == before
    assert sorted(path.name for path in out.iterdir()) == ["deploybot.py"]  # no temporary left


@pytest.mark.parametrize(
    ("first", "second"),
    [("json", "json_agent"), ("counter", "counter"), ("Tally", "tally")],
    ids=["renamed-builtin", "same-name", "case-only"],
)
def test_two_agents_that_compile_to_one_module_are_refused(
    tmp_path: Path, first: str, second: str
) -> None:
    """rt19 F12: `agent json` and `agent json_agent` both compile to `json_agent.py`; the
    second silently replaced the first ("wrote" twice), and `compile --check` then always
    failed. Names are compared case-folded (one file on macOS and Windows)."""
    (tmp_path / "one.agent").write_text(f"agent {first} {{ start done }}\nfinal done\n")
    (tmp_path / "two.agent").write_text(f"agent {second} {{ start done }}\nfinal done\n")
    for extra in ([], ["--check"]):
        done = run("compile", "one.agent", "two.agent", "-o", "build", *extra, cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert "both compile to" in done.stderr and "rename one of the agents" in done.stderr
        assert not (tmp_path / "build").exists()
    again = run("compile", "one.agent", "one.agent", "-o", "build", cwd=tmp_path)
    assert again.returncode == 0, again.stderr  # the same file given twice is one


@pytest.mark.parametrize("name", ["typing_extensions", "pydantic_core", "annotated_types"])
def test_an_agent_named_like_what_pydantic_imports_gets_its_own_module_name(
    tmp_path: Path, name: str
) -> None:
    """rt19 F5: `agent typing_extensions` was written to `typing_extensions.py`, which
    pydantic then imported in place of its own dependency (`ImportError: cannot import
    name 'Sentinel'`), and mypy refused outright."""
    (tmp_path / "a.agent").write_text(f"agent {name} {{ start done }}\nfinal done\n")
    done = run("compile", "a.agent", "-o", "build", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (tmp_path / "build").iterdir()] == [f"{name}_agent.py"]
    imported = subprocess.run(
        [sys.executable, "-W", "error", "-c", f"import {name}_agent"],
        cwd=tmp_path / "build", capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr


def test_every_module_pydantic_requires_is_kept_free() -> None:
    """`PYDANTIC_NEEDS` is written out (a module's name must not depend on what is
    installed); this fails when a pydantic upgrade requires another module."""
    import importlib.metadata

    from twelvefold.compiler.pynames import PYDANTIC_NEEDS

    required = {
        re.match(r"[A-Za-z0-9_.\-]+", r).group().replace("-", "_").lower()  # type: ignore[union-attr]
        for r in importlib.metadata.requires("pydantic") or []
        if "extra" not in r.partition(";")[2]
    }
    assert required <= set(PYDANTIC_NEEDS)
