"""The `twelvefold` program's entry point (`[project.scripts]`, `python -m twelvefold`).

Ctrl-C and SIGTERM are taken over first (twelvefold/interrupts.py), before the command
line module imports anything: a SIGTERM while click loads would otherwise end the
process with no word, and a Ctrl-C lost in an import would go unnoticed.
"""

from __future__ import annotations


def main() -> None:
    from twelvefold.interrupts import remembering

    remembering()
    from twelvefold.cli import main as run_command_line

    run_command_line()
