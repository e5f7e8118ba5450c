"""Threads pinned to the agent they started with (docs/versions.md).

A thread launched from a `.agent` file records an `AgentVersion`: the file's text and
every file its compilation read (the files it imports, its sub-agents' `.agent` files and
theirs, recursively, and the prompt templates all of them use), keyed by the SHA-256 of
all of them. The version
is stored once per store (`EventStore.save_version`), and the thread's row names it
(`ThreadInfo.version`). Whenever the thread is loaded and the agent on disk is not that
version (edited, moved, deleted, or a prompt changed), its reducer is regenerated from
the stored sources by the installed compiler.

What comes out of the database is never run as it is: it is `.agent` text and templates,
checked against the digest the thread names (a stored version whose bytes do not hash
to its key is `VersionTampered`), then compiled. The digest covers the sources only; the
compiler a version was first compiled with is recorded beside it (`compiler`) for people
to read. A newer compiler regenerates the reducer, and the loop replays the thread's
whole log under it before running on (`AgentChanged` if an event no longer fits).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import field
from pathlib import Path

from pydantic_core import from_json, to_json

from .integrity import LogError
from .localfiles import no_links_to
from .records import record
from .usercache import user_cache_dir

MAX_VERSION_BYTES = 16 << 20
"""The largest stored version a store hands back to be compiled (16 MiB of sources)."""


class VersionError(LogError):
    """A thread's pinned version cannot be used: missing from the store, or damaged."""


class VersionTampered(VersionError):
    """A stored version whose content does not hash to the digest the thread names: it was
    edited in the database. Nothing from it is compiled or run."""

    def __init__(self, digest: str, why: str) -> None:
        super().__init__(
            f"agent version {digest[:16]} in the thread store does not verify: {why}. It was "
            "changed outside twelvefold; nothing was run. Restore the database from a backup, "
            "or run the thread with the agent file as it was (`--agent PATH`)"
        )
        self.digest = digest


@record
class AgentVersion:
    """What it takes to get a thread's reducer back: sources, by relative path."""

    main: str
    """The `.agent` file's path among `files` (`deploybot.agent`, or `agents/deploybot.agent`
    when a file it names lies outside its folder): its text is `files[main]`."""
    files: Mapping[str, str]
    """Relative path -> text, laid out as on disk below the folder they all share: the
    `.agent` file, the files it imports, its sub-agents' files (theirs too, recursively),
    and each prompt template, in the prompts folder it was read from."""
    compiler: str = ""
    """The twelvefold version and compiler fingerprint that first compiled it (information
    only: not part of the digest)."""
    prompt_dirs: Mapping[str, str] = field(default_factory=dict)
    """`.agent` file's path among `files` -> the prompts folder its templates were read
    from, relative to the same folder (`.` for that folder itself): for each file of the
    tree that read a template, whatever the folder was called or however it was chosen
    (`--prompts`, the nearest `prompts/`). Versions stored before this existed have none,
    and their templates are looked up by the nearest `prompts/` inside the stored copy."""
    digest: str = field(init=False)
    """SHA-256 (64 hex digits) of the sources: `main`, every file's path and text, and
    the prompt folders."""

    def __post_init__(self) -> None:
        digest = sources_digest(self.main, self.files, self.prompt_dirs)
        object.__setattr__(self, "digest", digest)

    @property
    def name(self) -> str:
        """The file's stem, as compiled modules are named."""
        return Path(self.main).stem

    def to_json(self) -> str:
        """The stored form: `{"main", "files", "compiler"}` as JSON text, and
        `"prompt_dirs"` when there are any."""
        data: dict[str, object] = {
            "main": self.main,
            "files": dict(self.files),
            "compiler": self.compiler,
        }
        if self.prompt_dirs:
            data["prompt_dirs"] = dict(self.prompt_dirs)
        return to_json(data).decode()

    @classmethod
    def from_stored(cls, digest: str, body: str) -> AgentVersion:
        """The version stored under `digest`, verified: `VersionTampered` when `body` is
        not what twelvefold writes or its sources do not hash to `digest`."""
        if len(body) > MAX_VERSION_BYTES:
            raise VersionTampered(digest, "it is larger than any version twelvefold stores")
        try:
            data = from_json(body)
        except ValueError:
            raise VersionTampered(digest, "it is not JSON") from None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("main"), str)
            or not isinstance(data.get("files"), dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in data["files"].items())
            or not isinstance(data.get("compiler", ""), str)
            or data["main"] not in data["files"]
            or not all(safe_relative(path) for path in data["files"])
            or not _prompt_dirs_fit(data.get("prompt_dirs", {}), data["files"])
        ):
            raise VersionTampered(digest, "it does not have the shape twelvefold stores")
        version = cls(
            data["main"], data["files"], data.get("compiler", ""), data.get("prompt_dirs", {})
        )
        if version.digest != digest:
            raise VersionTampered(digest, f"its sources hash to {version.digest[:16]}")
        return version


def _prompt_dirs_fit(prompt_dirs: object, files: Mapping[str, str]) -> bool:
    """Whether a stored `prompt_dirs` names files of the version and folders inside it."""
    return isinstance(prompt_dirs, dict) and all(
        isinstance(agent, str)
        and agent in files
        and isinstance(folder, str)
        and (folder == "." or safe_relative(folder))
        for agent, folder in prompt_dirs.items()
    )


PROMPT_DIRS_MARK = "\x00prompt folders"
"""Separates the files from the prompt folders in what a digest covers: no path holds a
NUL, so no set of files alone reads as files followed by prompt folders."""


def sources_digest(main: str, files: Mapping[str, str], prompt_dirs: Mapping[str, str]) -> str:
    """SHA-256 over `main`, each file's path and text in path order, then (when there are
    any) `PROMPT_DIRS_MARK` and each agent's prompts folder, in path order. Each part is
    length-prefixed, so no two different versions share a digest by concatenation; a
    version without prompt folders hashes as versions did before they existed."""
    hasher = hashlib.sha256(b"twelvefold agent version 1\n")
    parts = [main, *(p for path in sorted(files) for p in (path, files[path]))]
    if prompt_dirs:
        parts.append(PROMPT_DIRS_MARK)
        parts.extend(p for agent in sorted(prompt_dirs) for p in (agent, prompt_dirs[agent]))
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        hasher.update(f"{len(data)}:".encode())
        hasher.update(data)
    return hasher.hexdigest()


def safe_relative(path: str) -> bool:
    """Whether `path` is a plain relative POSIX path (no `..`, no absolute, no NUL), so
    writing it under a folder stays inside that folder."""
    if not path or "\x00" in path or "\\" in path or path.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


@record
class AgentSources:
    """One `.agent` file of a version's tree as found on disk: the file (absolute), the
    prompts folder its compilation read from and the template names it read there, and
    the files it `import`s as written (relative to its folder)."""

    file: Path
    prompts_dir: Path
    prompts: Sequence[str] = ()
    imports: Sequence[str] = ()


def version_of(agents: Sequence[AgentSources], compiler: str) -> AgentVersion | None:
    """The version of a tree of `.agent` files as they are on disk: `agents[0]` is the
    agent itself, the rest its sub-agents, theirs, and so on. Each file, each file it
    imports and each prompt template it read is stored by its path relative to the
    folder all of them share, so a name with `..` (`import "../shared/types.agent"`,
    `= "../billing/refunds.agent"`) means in the stored copy what it meant on disk.

    None when a file is not UTF-8 text now, or a file is named by an absolute path (it
    cannot be stored beside the others): the agent then runs unpinned, as before versions
    existed."""
    found: dict[Path, str] = {}
    folders: dict[Path, Path] = {}  # each agent that read a template -> its prompts folder
    try:
        for agent in agents:
            named = [agent.file.parent / name for name in agent.imports]
            if any(Path(name).is_absolute() or "\x00" in name for name in agent.imports):
                return None
            prompts = [agent.prompts_dir / name for name in agent.prompts]
            for path in (agent.file, *named, *(p for p in prompts if p.is_file())):
                path = _absolute(path)
                if path not in found:
                    found[path] = path.read_bytes().decode("utf-8")
            if agent.prompts:
                folders[_absolute(agent.file)] = _absolute(agent.prompts_dir)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    main = _absolute(agents[0].file)
    # The prompts folders count as well: a template named `agents/plan.j2` in a folder
    # above every file would otherwise be stored without the folder it was named from.
    root = Path(os.path.commonpath([*(path.parent for path in found), *folders.values()]))
    files = {path.relative_to(root).as_posix(): text for path, text in found.items()}
    prompt_dirs = {
        agent.relative_to(root).as_posix(): folder.relative_to(root).as_posix()
        for agent, folder in folders.items()
    }
    if not all(safe_relative(path) for path in files):
        return None
    return AgentVersion(main.relative_to(root).as_posix(), files, compiler, prompt_dirs)


def _absolute(path: Path) -> Path:
    """`path` made absolute (from the current folder: `--prompts templates`) and with `..`
    taken out as written, not through symbolic links (os.path.abspath)."""
    return Path(os.path.abspath(path))


def root_of_copy(version: AgentVersion, sources: Path) -> Path:
    """The folder a written-out copy of `version` was written to, from the folder its
    `.agent` file is in there (`Agent.sources`): `main`'s own folders taken off."""
    depth = len(Path(version.main).parent.parts)
    return sources.parents[depth - 1] if depth else sources


def prompts_in_copy(version: AgentVersion, root: Path, agent_file: Path) -> Path:
    """The prompts folder of one `.agent` file of a copy of `version` written out at
    `root` (`materialized`): the folder the version recorded for it; for a version stored
    before folders were recorded, the nearest `prompts/` from the file's folder up to
    `root` (never above it: the project the copy came from may have changed since);
    else `root/prompts`, which `materialized` makes, empty when the version has none."""
    root, agent_file = root.resolve(), agent_file.resolve()
    relative = Path(os.path.relpath(agent_file, root)).as_posix()
    recorded = version.prompt_dirs.get(relative)
    if recorded is not None:
        return root / recorded
    for folder in [agent_file.parent, *agent_file.parent.parents]:
        if (folder / "prompts").is_dir():
            return folder / "prompts"
        if folder == root or root not in folder.parents:
            break
    return root / "prompts"


def materialized(version: AgentVersion, cache_dir: Path) -> Path:
    """The folder holding `version`'s sources as files, under `cache_dir/versions/DIGEST`:
    each of its files at its relative path, and an empty `<folder>/prompts/` when the
    version has no such folder (see `prompts_in_copy`).

    The folder is checked against `version` each time, never trusted as found: a
    repository can ship `.twelvefold/cache/versions/DIGEST/` (the digest hashes the
    sources, which its history holds) with another sub-agent, prompt or imported file in
    it. When anything differs (a file's text, a file missing or extra, a link, a FIFO)
    the folder is written again, whole, from `version`; the modules `load_version`
    compiles beside the sources (signed, checked when read) are all it may hold besides.

    When `cache_dir/versions` is a link, or a folder on the way to it is (`no_links_to`),
    nothing is written through it: the copy goes under the user's own cache folder
    (`usercache.user_cache_dir`) instead; `VersionError` when that cannot be used either."""
    versions = cache_dir / "versions"
    if not no_links_to(versions):
        own = user_cache_dir()
        if own is None:
            raise VersionError(
                f"{versions} is a symbolic link, or a folder on the way to it is: nothing is "
                "written through one, and the user's cache folder cannot be used instead. "
                "Nothing was run; remove the link and run again"
            )
        versions = own / "versions"
    folder = versions / version.digest[:32]
    for _ in range(3):  # a second process may be writing it again at the same moment
        if _copy_holds(folder, version):
            return folder
        _write_copy(version, folder)
    if _copy_holds(folder, version):
        return folder
    raise VersionError(
        f"the copy of agent version {version.digest[:16]} at {folder} keeps changing while "
        "it is written: something else is writing into it. Nothing was run; remove the "
        "folder and run again"
    )


def _write_copy(version: AgentVersion, folder: Path) -> None:
    """Write `version`'s files into a new folder and put it in the place of `folder`."""
    import shutil  # here, not at the top: only regenerating a pinned version needs it

    temporary = folder.with_name(f"{folder.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    for path, text in version.files.items():
        target = temporary / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    if "prompts" not in version.files:
        (temporary / "prompts").mkdir(exist_ok=True)
    # What was there is moved aside first (a folder that is not empty cannot be replaced),
    # then removed: rmtree takes links away without following them.
    stale = folder.with_name(f"{folder.name}.{os.getpid()}.{threading.get_ident()}.old")
    _remove(stale)
    with contextlib.suppress(FileNotFoundError):
        os.rename(folder, stale)
    try:
        os.replace(temporary, folder)
    except OSError:  # another process put its copy there first: checked like any other
        shutil.rmtree(temporary, ignore_errors=True)
    _remove(stale)


def _remove(path: Path) -> None:
    """Take `path` away, whatever it is: a folder with all it holds (links in it are
    removed, not followed), or a link (never what it points to), a file, a FIFO."""
    import shutil

    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


COMPILED_BESIDE = re.compile(r"[0-9a-f]{16}\.(py|sig)(\.[0-9]+\.[0-9]+\.tmp)?")
"""The end of a file's name that `load_version` writes into a copy beside the sources
(after `<name>-`): the module compiled from it, its signature, and either one while it is
being written."""


def _copy_holds(folder: Path, version: AgentVersion) -> bool:
    """Whether `folder` holds exactly `version`'s files, as regular files (links are not
    followed, nothing but a regular file is opened), the folders they are in and
    `prompts/`, and besides them only compiled modules (`COMPILED_BESIDE`)."""
    expected = {path: text.encode("utf-8", "surrogatepass") for path, text in version.files.items()}
    folders = {parent.as_posix() for path in expected for parent in Path(path).parents}
    if "prompts" not in expected:  # a version may hold a file of that name (imported)
        folders.add("prompts")
    folders.discard(".")
    compiled = f"{version.name}-"
    seen: set[str] = set()
    pending = [""]
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return False
        while pending:
            relative = pending.pop()
            with os.scandir(folder / relative) as entries:
                for entry in entries:
                    path = f"{relative}/{entry.name}" if relative else entry.name
                    if entry.is_dir(follow_symlinks=False) and path in folders:
                        seen.add(path)
                        pending.append(path)
                    elif entry.is_file(follow_symlinks=False) and path in expected:
                        if not _holds(entry.path, expected[path]):
                            return False
                        seen.add(path)
                    elif not (
                        entry.is_file(follow_symlinks=False)
                        and not relative
                        and entry.name.startswith(compiled)
                        and COMPILED_BESIDE.fullmatch(entry.name[len(compiled) :])
                    ):
                        return False  # a link, a FIFO, a file or folder the version lacks
    except OSError:
        return False
    return seen == folders | set(expected)


def _holds(path: str, text: bytes) -> bool:
    """Whether the regular file at `path` (not a link: it is not followed) holds `text`,
    reading no more of it than that."""
    from .localfiles import read_regular_file

    try:
        return read_regular_file(Path(path), follow_links=False, most=len(text)) == text
    except OSError:  # not a regular file, a link, or longer than `text`
        return False


def every_stdlib_module() -> tuple[str, ...]:
    """Regenerating a pinned version checks nothing about tools: it was checked when it was
    first compiled, and the runtime refuses a standard-library tool at each call unless the
    configuration allows it then (docs/runtime.md)."""
    return tuple(sorted(sys.stdlib_module_names))
