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


def test_a_change_to_an_imported_file_compiles_the_agent_again(tmp_path: Path) -> None:
    """The imported types are compiled into the agent's module: a cached module must not
    outlive an edit of the file it imports."""
    from twelvefold.runtime.loading import load_agent

    (tmp_path / "types.agent").write_text("type In { a: string }\n")
    agent_file = tmp_path / "uses.agent"
    agent_file.write_text(
        'import "types.agent"\nagent uses { input In start done }\nfinal done(In)\n'
    )
    before = load_agent(agent_file, cache_dir=tmp_path / "cache")
    assert set(before.spec.types["In"].model_fields) == {"a"}
    (tmp_path / "types.agent").write_text("type In { a: string, b: int }\n")
    after = load_agent(agent_file, cache_dir=tmp_path / "cache")
    assert set(after.spec.types["In"].model_fields) == {"a", "b"}


def test_an_import_of_a_fifo_does_not_block_loading(tmp_path: Path) -> None:
    import os

    from twelvefold.runtime.loading import AgentLoadError, load_agent

    os.mkfifo(tmp_path / "pipe.agent")
    agent_file = tmp_path / "uses.agent"
    agent_file.write_text('import "pipe.agent"\nagent uses { start done }\nfinal done\n')
    with pytest.raises(AgentLoadError, match=r"pipe\.agent"):
        load_agent(agent_file, cache_dir=tmp_path / "cache")


def test_a_grandchild_gone_compiles_the_agent_again(tmp_path: Path) -> None:
    """A sub-agent's own sub-agent decides whether the whole tree compiles (E130): a
    cached module of the top agent must not outlive the grandchild's file."""
    from twelvefold.runtime.loading import AgentLoadError, load_agent

    def calling(name: str, child: str) -> str:
        return (f"agent {name} {{ input T start go }}\ntype T {{ x: string }}\n"
                f'agent go(T) -> T = "{child}" {{ next done }}\nfinal done(T)\n')  # fmt: skip

    (tmp_path / "top.agent").write_text(calling("top", "mid.agent"))
    (tmp_path / "mid.agent").write_text(calling("mid", "leaf.agent"))
    (tmp_path / "leaf.agent").write_text(
        "agent leaf { input T start done }\ntype T { x: string }\nfinal done(T)\n"
    )
    load_agent(tmp_path / "top.agent", cache_dir=tmp_path / "cache")
    (tmp_path / "leaf.agent").unlink()
    with pytest.raises(AgentLoadError, match=r"top\.agent does not compile"):
        load_agent(tmp_path / "top.agent", cache_dir=tmp_path / "cache")


def test_threads_writing_one_compiled_module_at_once_do_not_take_each_others_file(
    tmp_path: Path,
) -> None:
    """Two runtimes in one process compiling the same agent write the same cache file at
    once; each write's temporary file is its own, so neither finds its file gone."""
    import threading

    from twelvefold.runtime.loading import _write_atomically

    target = tmp_path / "agent-0123456789abcdef.py"
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def write() -> None:
        start.wait()
        for _ in range(200):
            try:
                _write_atomically(target, "x = 1\n" * 2000)
            except OSError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and target.read_text() == "x = 1\n" * 2000


def test_a_module_two_threads_import_at_once_is_handed_out_only_once_it_has_run(
    tmp_path: Path,
) -> None:
    """A generated module is in sys.modules before it has run; a second thread importing
    it then must wait for it rather than take the half-run module."""
    import sys
    import threading

    from twelvefold.runtime.loading import import_file

    module = tmp_path / "slow_module.py"
    module.write_text("import time\ntime.sleep(0.2)\nAGENT = 'ready'\n")
    seen: list[object] = []
    start = threading.Barrier(2)

    def load() -> None:
        start.wait()
        seen.append(getattr(import_file(module, "_twelvefold_slow_test"), "AGENT", None))

    threads = [threading.Thread(target=load) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.modules.pop("_twelvefold_slow_test", None)
    assert seen == ["ready", "ready"]
