"""`twelvefold test` ends on Ctrl-C even when the `KeyboardInterrupt` is lost.

A red team (rt11) found 10-15% of interrupts of `twelvefold test` swallowed: the signal
landed in hypothesis's garbage-collection callback, where Python prints an exception as
ignored, and the run went on to the end and exited 0. The command's handler remembers
the interrupt too (`interrupts.SEEN`), and each generated thread checks it first.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from twelvefold import interrupts
from twelvefold.testing.properties import PROPERTIES
from twelvefold.testing.runner import run_properties, run_property
from twelvefold.testing.subject import load_subject

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def lost_interrupt() -> object:
    """The state after a Ctrl-C whose exception the garbage collector swallowed."""
    interrupts.SEEN.set()
    yield
    interrupts.forget()


def test_a_lost_ctrl_c_still_ends_a_property_at_its_next_thread(
    tmp_path: Path, lost_interrupt: object
) -> None:
    subject = load_subject(EXAMPLES / "deploybot.agent", cache_dir=tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        run_property(subject, PROPERTIES[0], examples=300, seed=1)
    with pytest.raises(KeyboardInterrupt):
        run_properties(subject, PROPERTIES, examples=300, seed=1)


def test_the_handler_remembers_and_raises() -> None:
    try:
        with pytest.raises(KeyboardInterrupt):
            interrupts.remember(signal.SIGINT, None)
        assert interrupts.SEEN.is_set()
    finally:
        interrupts.forget()


def test_a_ctrl_c_lost_in_a_callback_is_not_printed_and_is_remembered(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # CI met it: the run ended, but Python printed "Exception ignored in: <function
    # gc_callback ...>" and a traceback above the command's one line.
    import sys
    import types

    lost = types.SimpleNamespace(
        exc_type=KeyboardInterrupt, exc_value=KeyboardInterrupt(), exc_traceback=None,
        err_msg=None, object=None,
    )  # fmt: skip
    try:
        interrupts.quiet_lost(lost)
        assert interrupts.SEEN.is_set()
    finally:
        interrupts.forget()
    assert capsys.readouterr().err == ""
    other = types.SimpleNamespace(exc_type=ValueError, exc_value=ValueError("kept"))
    passed_on: list[object] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "__unraisablehook__", passed_on.append)
        interrupts.quiet_lost(other)
    assert passed_on == [other]  # Python's own hook prints anything else
    assert not interrupts.SEEN.is_set()


def test_a_command_run_in_process_leaves_ctrl_c_to_its_caller() -> None:
    """CI: `twelvefold test` run with `CliRunner` left this process ignoring Ctrl-C and
    SIGTERM (what the program does once its result is out), and every process it started
    after inherited that: the Ctrl-C tests' commands ran on for two minutes each."""
    from click.testing import CliRunner

    from twelvefold.cli import cli

    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        agent = str(EXAMPLES / "deploybot.agent")
        result = CliRunner().invoke(cli, ["test", agent, "--examples", "5", "--seed", "1"])
        assert result.exit_code == 0, result.output
        for signum in handlers:
            assert signal.getsignal(signum) is not signal.SIG_IGN, signum
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
