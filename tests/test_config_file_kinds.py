"""A configuration file that is there but cannot be read as one (a link to nothing, a
folder, a pipe) is an error, never "no configuration": read as none, the search would
go on to defaults, and the server's defaults let anyone with a token launch and decide."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from twelvefold.runtime.config import ConfigError, find_config

POLICY = '[server]\nlaunchers = ["leads"]\n'


def test_a_plain_configuration_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "twelvefold.toml").write_text(POLICY)
    assert find_config(tmp_path).settings["server"] == {"launchers": ["leads"]}


def test_no_file_at_all_is_no_configuration(tmp_path: Path) -> None:
    assert find_config(tmp_path / "nothing-here").path is None


@pytest.mark.parametrize("kind", ["dangling link", "folder", "pipe"])
def test_a_configuration_that_is_not_a_readable_file_is_refused(tmp_path: Path, kind: str) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "twelvefold.toml").write_text(POLICY)  # what a fallback would find instead
    config = project / "twelvefold.toml"
    if kind == "dangling link":
        config.symlink_to(tmp_path / "moved-away.toml")
    elif kind == "folder":
        config.mkdir()
    else:
        os.mkfifo(config)  # reading it would block for ever
    with pytest.raises(ConfigError, match=r"twelvefold\.toml"):
        find_config(project)
