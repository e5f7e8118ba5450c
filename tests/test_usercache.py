"""Nothing that runs code as it loads is read from a place someone else can write: the
parser's tables (a pickle) never from the shared temporary folder, and only from the
user's own cache folder when no one else can write there."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from twelvefold.runtime import usercache

AGENT = "agent a { start done }\nfinal done\n"

# Builds Lark's tables as twelvefold used to (`cache=True`), which leaves them at Lark's
# predictable name in TMPDIR; prints that name.
OLD_CACHE = """
import glob, os, tempfile
from lark import Lark
from twelvefold.grammar import grammar_text
Lark(grammar_text(), parser="lalr", lexer="contextual", strict=True,
     propagate_positions=True, maybe_placeholders=True, cache=True)
print(glob.glob(os.path.join(tempfile.gettempdir(), ".lark_cache_*"))[0])
"""


class _Planted:
    """A pickle that, when loaded, leaves a marker file (what an attacker would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (open, (str(self.marker), "w"))  # runs inside pickle.load


def _environment(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "XDG_CACHE_HOME": str(tmp_path / "c")}


def _check(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    agent = tmp_path / "a.agent"
    agent.write_text(AGENT)
    return subprocess.run(
        [sys.executable, "-m", "twelvefold", "check", str(agent)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_pickle_planted_at_larks_temporary_name_is_never_loaded(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    (tmp_path / "tmp").mkdir()
    made = subprocess.run(
        [sys.executable, "-c", OLD_CACHE], env=env, capture_output=True, text=True, check=True
    )
    planted = Path(made.stdout.strip())
    first_line = planted.read_bytes().split(b"\n", 1)[0]  # the grammar's hash: still valid
    marker = tmp_path / "PWNED"
    planted.write_bytes(first_line + b"\n" + pickle.dumps(_Planted(marker)))
    done = _check(tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()


def test_the_tables_are_kept_in_the_users_own_folder_closed_to_others(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "c" / "twelvefold").mkdir(parents=True, mode=0o777)
    os.chmod(tmp_path / "c" / "twelvefold", 0o777)
    assert _check(tmp_path, env).returncode == 0
    folder = tmp_path / "c" / "twelvefold"
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700)  # narrowed: it is the user's
    assert len(list(folder.glob("parser-*.pickle"))) == 1
    assert not list((tmp_path / "tmp").iterdir())  # nothing in the shared folder


def test_tables_others_can_write_are_not_loaded(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    (tmp_path / "tmp").mkdir()
    assert _check(tmp_path, env).returncode == 0
    (tables,) = (tmp_path / "c" / "twelvefold").glob("parser-*.pickle")
    first_line = tables.read_bytes().split(b"\n", 1)[0]
    marker = tmp_path / "PWNED"
    tables.write_bytes(first_line + b"\n" + pickle.dumps(_Planted(marker)))
    os.chmod(tables, 0o666)
    assert _check(tmp_path, env).returncode == 0
    assert not marker.exists()


# ---- the key that signs cached modules --------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    made = usercache.user_cache_dir()
    assert made is not None
    return made


def test_a_key_is_made_once_and_kept(folder: Path) -> None:
    key = usercache.cache_key()
    assert key is not None and len(key) == usercache.KEY_BYTES
    assert usercache.cache_key() == key
    assert (folder / usercache.KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert [p.name for p in folder.iterdir()] == [usercache.KEY_FILE]  # no temporary left


def test_a_folder_at_the_keys_name_means_no_key_not_an_error(folder: Path) -> None:
    (folder / usercache.KEY_FILE).mkdir()
    assert usercache.cache_key() is None
    assert (folder / usercache.KEY_FILE).is_dir()


def test_a_fifo_at_the_keys_name_is_not_waited_on(folder: Path) -> None:
    os.mkfifo(folder / usercache.KEY_FILE, 0o600)
    assert usercache.cache_key() is None


def test_a_link_at_the_keys_name_is_not_followed(folder: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"k" * usercache.KEY_BYTES)
    elsewhere.chmod(0o600)
    (folder / usercache.KEY_FILE).symlink_to(elsewhere)
    assert usercache.cache_key() is None


@pytest.mark.parametrize("found", [b"", b"short", b"k" * (usercache.KEY_BYTES + 5)])
def test_a_key_cut_short_is_replaced_whole(folder: Path, found: bytes) -> None:
    """A key a crash cut short would otherwise stay short forever (and no module would
    ever be cached): it is replaced by a new one, written whole and moved into place."""
    path = folder / usercache.KEY_FILE
    path.write_bytes(found)
    path.chmod(0o600)
    key = usercache.cache_key()
    assert key is not None and len(key) == usercache.KEY_BYTES
    assert path.read_bytes() == key
    assert usercache.cache_key() == key
    assert [p.name for p in folder.iterdir()] == [usercache.KEY_FILE]


def test_the_tables_are_used_under_a_group_writable_umask(tmp_path: Path) -> None:
    """Under umask 002 (user-private groups) Lark wrote the tables 0664, which are then
    refused as writable by others: every start built them again (most of a second)."""
    env = _environment(tmp_path)
    (tmp_path / "tmp").mkdir()
    agent = tmp_path / "a.agent"
    agent.write_text(AGENT)
    done = subprocess.run(
        [sys.executable, "-m", "twelvefold", "check", str(agent)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
        preexec_fn=lambda: os.umask(0o002),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (tables,) = (tmp_path / "c" / "twelvefold").glob("parser-*.pickle")
    assert oct(tables.stat().st_mode & 0o777) == oct(0o600)
    show = "from twelvefold.compiler import parser; print(parser._tables_file())"
    used = subprocess.run(
        [sys.executable, "-c", show],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert used.stdout.strip() == str(tables)
