"""The compiled-module cache: a changed compiler never serves a module it would not write."""

from __future__ import annotations

from pathlib import Path

import pytest

from twelvefold.runtime import loading

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_a_module_compiled_by_another_compiler_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = EXAMPLES / "deploybot.agent"
    loading.load_agent(agent, cache_dir=tmp_path)
    (first,) = tmp_path.glob("deploybot-*.py")
    # What an older compiler left: same agent text, same version number, other output.
    first.write_text(first.read_text().replace("request=state.request", "request=None"))
    monkeypatch.setattr(loading, "compiler_fingerprint", lambda: "another-compiler")
    fresh = loading.load_agent(agent, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("deploybot-*.py"))) == 2
    assert "request=state.request" in Path(str(fresh.module.__file__)).read_text()


def test_the_fingerprint_covers_the_compilers_files() -> None:
    assert loading.compiler_fingerprint() == loading.compiler_fingerprint()
    assert len(loading.compiler_fingerprint()) == 16
