"""The compiled-module cache: a changed compiler never serves a module it would not write."""

from __future__ import annotations

import shutil
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


# ---- a cache a repository ships is not trusted ------------------------------------------

SHIPPED = 'open({marker!r}, "w").close()\n'
"""What a planted module runs: leaves a marker file."""


def _user(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """This test's user: their cache folder (and so their key) is `folder`."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))


def _forget_modules() -> None:
    """Drop the generated modules this process imported (loading runs each once)."""
    import sys

    for name in [name for name in sys.modules if name.startswith("_twelvefold_deploybot_")]:
        del sys.modules[name]


def test_a_module_planted_in_the_cache_is_compiled_again_not_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repository that ships `.twelvefold/cache/<stem>-<hash>.py` (the name follows from
    the content, so it can be computed) does not get it run."""
    agent = tmp_path / "deploybot.agent"
    agent.write_text((EXAMPLES / "deploybot.agent").read_text())
    shutil.copytree(EXAMPLES.parent / "prompts", tmp_path / "prompts")
    cache = tmp_path / ".twelvefold" / "cache"
    _user(monkeypatch, tmp_path / "author")  # the repository's author, with their own key
    loading.load_agent(agent, cache_dir=cache)
    (module,) = cache.glob("deploybot-*.py")
    marker = tmp_path / "RAN"
    module.write_text(module.read_text() + SHIPPED.format(marker=str(marker)))
    _user(monkeypatch, tmp_path / "victim")
    loaded = loading.load_agent(agent, cache_dir=cache)
    assert not marker.exists()
    assert loaded.spec.name == "deploybot"
    assert "RAN" not in module.read_text()  # compiled again over the planted one


def test_a_module_signed_with_another_users_key_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signature beside a module is checked against this user's key: one a repository
    ships with its planted module (signed with the author's key) does not pass."""
    from twelvefold.runtime.usercache import cache_key, signature

    agent = EXAMPLES / "deploybot.agent"
    _user(monkeypatch, tmp_path / "author")
    loading.load_agent(agent, cache_dir=tmp_path / "cache")
    (module,) = (tmp_path / "cache").glob("deploybot-*.py")
    marker = tmp_path / "RAN"
    planted = module.read_text() + SHIPPED.format(marker=str(marker))
    module.write_text(planted)
    used = module.with_suffix(".prompts.json").read_bytes()
    author_key = cache_key()
    assert author_key is not None
    module.with_suffix(".sig").write_text(
        signature(author_key, module.name, planted.encode(), used)
    )
    _forget_modules()
    assert loading.load_agent(agent, cache_dir=tmp_path / "cache").spec.name == "deploybot"
    assert marker.exists()  # the author's own twelvefold trusts what the author signed
    marker.unlink()
    _forget_modules()
    _user(monkeypatch, tmp_path / "victim")
    loading.load_agent(agent, cache_dir=tmp_path / "cache")
    assert not marker.exists()


def test_a_signed_module_is_imported_from_the_text_that_was_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module this user's twelvefold wrote is reused (not compiled again)."""
    _user(monkeypatch, tmp_path / "user")
    agent = EXAMPLES / "deploybot.agent"
    loading.load_agent(agent, cache_dir=tmp_path / "cache")
    (module,) = (tmp_path / "cache").glob("deploybot-*.py")
    stamp = module.stat().st_mtime_ns
    monkeypatch.setattr(loading, "_compile", lambda *_: pytest.fail("compiled again"))
    assert loading.load_agent(agent, cache_dir=tmp_path / "cache").spec.name == "deploybot"
    assert module.stat().st_mtime_ns == stamp


def test_a_planted_cache_does_not_run_under_the_cli(tmp_path: Path) -> None:
    """The red team's example: `twelvefold prompt` in a clone that ships its cache."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "author")}
    project = tmp_path / "project"
    project.mkdir()
    (project / "deploybot.agent").write_text((EXAMPLES / "deploybot.agent").read_text())
    shutil.copytree(EXAMPLES.parent / "prompts", project / "prompts")
    command = [sys.executable, "-m", "twelvefold", "prompt", "deploybot.agent", "decide",
               "--input", "deploy v1 to staging"]  # fmt: skip
    subprocess.run(command, cwd=project, env=env, capture_output=True, check=True)
    (module,) = (project / ".twelvefold" / "cache").glob("deploybot-*.py")
    marker = tmp_path / "RAN"
    module.write_text(module.read_text() + SHIPPED.format(marker=str(marker)))
    env["XDG_CACHE_HOME"] = str(tmp_path / "victim")
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()


# ---- a cache file that is not a regular file is not read -------------------------------


@pytest.mark.parametrize("suffix", [".sig", ".py", ".prompts.json"])
@pytest.mark.parametrize("kind", ["link to /dev/zero", "fifo", "link to a signed copy"])
def test_a_cache_file_that_is_not_a_regular_file_is_ignored_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, kind: str
) -> None:
    """A repository may ship `.twelvefold/cache/<stem>-<hash>.sig` (or the module) as a link
    to /dev/zero (read whole: a MemoryError) or a FIFO (waited on forever): neither is
    read, even through a link to a file this user signed, and the module is compiled
    again, written over the name (the link replaced, not written through)."""
    import os

    _user(monkeypatch, tmp_path / "user")
    agent = EXAMPLES / "deploybot.agent"
    cache = tmp_path / "cache"
    loading.load_agent(agent, cache_dir=cache)
    (module,) = cache.glob("deploybot-*.py")
    planted = module.with_suffix(suffix)
    copy = tmp_path / f"copy{suffix}"
    shutil.copyfile(planted, copy)
    planted.unlink()
    if kind == "fifo":
        os.mkfifo(planted)
    else:
        planted.symlink_to("/dev/zero" if kind == "link to /dev/zero" else copy)
    _forget_modules()
    compiled: list[Path] = []
    real_compile = loading._compile
    monkeypatch.setattr(
        loading, "_compile", lambda path, *rest: compiled.append(path) or real_compile(path, *rest)
    )
    assert loading.load_agent(agent, cache_dir=cache).spec.name == "deploybot"
    assert compiled == [agent]
    assert planted.is_file() and not planted.is_symlink()
    assert planted.read_bytes() == copy.read_bytes()
    assert Path("/dev/zero").is_char_device()  # replaced the link, not written through it


def test_a_cache_file_larger_than_the_cap_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twelvefold.runtime import localfiles

    _user(monkeypatch, tmp_path / "user")
    agent = EXAMPLES / "deploybot.agent"
    loading.load_agent(agent, cache_dir=tmp_path / "cache")
    (module,) = (tmp_path / "cache").glob("deploybot-*.py")
    monkeypatch.setattr(localfiles, "MAX_FILE_BYTES", module.stat().st_size - 1)
    assert loading._signed_files(b"k" * 32, module) is None


def test_a_link_planted_at_the_temporary_name_is_not_written_through(tmp_path: Path) -> None:
    import os
    import threading

    target = tmp_path / "m.py"
    victim = tmp_path / "victim"
    victim.write_text("mine\n")
    temporary = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.symlink_to(victim)
    loading._write_atomically(target, "x = 1\n")
    assert target.read_text() == "x = 1\n"
    assert victim.read_text() == "mine\n"


@pytest.mark.parametrize("suffix", [".py", ".sig", ".prompts.json"])
def test_a_folder_planted_at_a_cached_name_is_a_cache_miss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """Found by a red team: a folder at a compiled module's name in `.twelvefold/cache/`
    stopped the agent (`cannot use …tmp: Is a directory`, the module could not be moved
    over it). The cache never stops an agent: the module compiled in memory runs, and
    the folder is left as it is."""
    _user(monkeypatch, tmp_path / "user")
    agent = EXAMPLES / "deploybot.agent"
    cache = tmp_path / "cache"
    loading.load_agent(agent, cache_dir=cache)
    (module,) = cache.glob("deploybot-*.py")
    planted = module.with_suffix(suffix)
    for name in {module, planted, module.with_suffix(".sig")}:
        name.unlink()
    planted.mkdir()
    (planted / "inside").write_text("kept\n")
    _forget_modules()
    for _ in range(2):  # and again, with the folder still there
        assert loading.load_agent(agent, cache_dir=cache).spec.name == "deploybot"
        _forget_modules()
    assert (planted / "inside").read_text() == "kept\n"


def test_a_cache_folder_that_is_a_link_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a red team: `.twelvefold/cache` as a link (a repository can ship one,
    to a folder elsewhere) was followed, modules read from and written to wherever it
    points. Nothing is read or written through it: the agent is compiled in memory."""
    _user(monkeypatch, tmp_path / "user")
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Path(".twelvefold").mkdir()
    Path(".twelvefold/cache").symlink_to(elsewhere)
    agent = EXAMPLES / "deploybot.agent"
    compiled: list[Path] = []
    real_compile = loading._compile
    monkeypatch.setattr(
        loading, "_compile", lambda path, *rest: compiled.append(path) or real_compile(path, *rest)
    )
    for _ in range(2):
        assert loading.load_agent(agent).spec.name == "deploybot"
        _forget_modules()
    assert compiled == [agent, agent]  # nothing cached through the link
    assert list(elsewhere.iterdir()) == []


def test_a_loaded_reducer_keeps_its_fingerprint_once_its_file_is_gone(tmp_path: Path) -> None:
    """The fingerprint names the code that runs, taken when it was loaded: a cache folder
    cleaned (or a project moved) while the module stays imported must not make it unknown
    (it was None: the snapshots went unused, and a log written under it no longer said
    which reducer wrote it, so a changed agent passed for a damaged log)."""
    import uuid

    source = (EXAMPLES / "deploybot.agent").read_text() + f"\n# {uuid.uuid4()}\n"
    for project in ("first", "second"):
        (tmp_path / project).mkdir()
        (tmp_path / project / "deploybot.agent").write_text(source)
    first = loading.load_agent(tmp_path / "first" / "deploybot.agent", cache_dir=tmp_path / "a")
    assert first.reducer is not None
    shutil.rmtree(tmp_path / "a")
    again = loading.load_agent(tmp_path / "second" / "deploybot.agent", cache_dir=tmp_path / "b")
    assert again.module is first.module  # one module per source, once per process
    assert again.reducer == first.reducer
