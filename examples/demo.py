"""`make demo`: deploybot, end to end, the way a user drives it from a terminal.

Checks and compiles examples/deploybot.agent, launches "deploy v1.2.3 to production",
and shows the thread pausing for a release manager's approval *before* the deploy tool
runs; then approves it from a separate process, as a person would later, and prints the
event log and where the thread is stored.

Offline by default: examples/cassettes/deploybot.jsonl stands in for the model. With
OPENAI_API_KEY set (and optionally OPENAI_BASE_URL, OPENAI_MODEL), the same agent runs
against a real model instead.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "demo"
AGENT = "examples/deploybot.agent"
CASSETTE = "examples/cassettes/deploybot.jsonl"
TWELVEFOLD = str(Path(sys.executable).parent / "twelvefold")


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def twelvefold(*arguments: str, capture: bool = False, refused: bool = False) -> str:
    """Run the CLI as a user would; exit the demo if it fails (or, with `refused`, if it
    does not exit 1)."""
    shown = " ".join(shlex.quote(a) for a in ("twelvefold", *arguments))
    print(f"$ {shown}", flush=True)
    result = subprocess.run(
        [TWELVEFOLD, *arguments], cwd=ROOT, text=True, capture_output=capture, check=False
    )
    if refused:
        if result.returncode != 1:
            sys.exit(f"demo: `{shown}` should have been refused; it exited {result.returncode}")
        return ""
    if result.returncode != 0:
        if capture:
            print(result.stdout, result.stderr, sep="\n")
        sys.exit(f"demo: `{shown}` exited {result.returncode}")
    return result.stdout if capture else ""


def main() -> None:
    live = bool(os.environ.get("OPENAI_API_KEY"))
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    database = str(WORK / "threads.db")
    model = [] if live else ["--cassette", CASSETTE]

    say("Check the agent: every output routed, every path to `deploy` in production approved")
    twelvefold("check", AGENT)

    say("Compile it to a plain Python reducer module")
    twelvefold("compile", AGENT, "-o", str(WORK.relative_to(ROOT)))
    generated = (WORK / "deploybot.py").read_text().splitlines()
    start = next(i for i, line in enumerate(generated) if line.startswith("def _deploy_action"))
    print("\n".join(generated[start - 2 : start + 22]))
    print(f"… {len(generated)} lines in {(WORK / 'deploybot.py').relative_to(ROOT)}")

    source = "a real model (OPENAI_API_KEY is set)" if live else f"the cassette {CASSETTE}"
    say(f"Launch a thread; the model's outputs come from {source}")
    twelvefold("run", AGENT, "--input", "deploy v1.2.3 to production", "--db", database, *model)
    (thread,) = json.loads(twelvefold("threads", "--db", database, "--json", capture=True))
    if thread["status"] != "waiting":
        sys.exit(f"demo: expected the thread to wait for approval, it is {thread['status']}")

    say("Someone who is not a release manager tries to approve it: refused, nothing recorded")
    twelvefold(
        "resume", thread["thread_id"], "--request", thread["request"], "--approve",
        "--by", "intern", "--db", database, *model, refused=True,
    )  # fmt: skip

    say(f"Later, in another process: a release manager approves request {thread['request']}")
    # The decision names the request it was made on, and `ana` must be a release manager
    # (examples/twelvefold.toml): anything else is refused and nothing is recorded.
    twelvefold(
        "resume", thread["thread_id"], "--request", thread["request"], "--approve",
        "--by", "ana", "--comment", "release window is open", "--db", database, *model,
    )  # fmt: skip

    say("The thread's event log: the only state there is")
    twelvefold("show", thread["thread_id"], "--db", database)
    print(f"\nThe thread is stored in {Path(database).relative_to(ROOT)} (SQLite).")
    print("Try: .venv/bin/twelvefold graph examples/deploybot.agent --format png -o deploybot.png")


if __name__ == "__main__":
    main()
