"""Nothing that runs code as it loads is read from a place someone else can write: the
parser's tables (a pickle) never from the shared temporary folder, and only from the
user's own cache folder when no one else can write there."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

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
