"""Fuzzing `twelvefold check` and `compile` as a user runs them: never a traceback, never a hang.

Inputs: the project's own .agent files (examples, tests/invalid, runtime fixtures) mutated
at random — spans deleted, duplicated, moved, tokens and hostile strings inserted, bytes
flipped (so many files are not UTF-8) — plus random bytes and odd files (empty, only a BOM,
a folder, a FIFO, /dev/zero, a file over the size limit). For each, the command must end
normally (exit 0, 1 or 2) with no exception out of it and no traceback in its output; with
`--format json` stdout must be exactly one JSON document.

The seed is fixed, so a failure reproduces; the message names the seed and keeps the input.
`make test` runs a modest count in process (click's CliRunner); `make fuzz` runs many more
(TWELVEFOLD_FUZZ_COUNT). A handful of cases also run as real processes. The per-input
time limit only catches hangs: it is generous and never judges speed.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from twelvefold.cli import cli

ROOT = Path(__file__).resolve().parent.parent
COUNT = int(os.environ.get("TWELVEFOLD_FUZZ_COUNT", "150"))
SEED = int(os.environ.get("TWELVEFOLD_FUZZ_SEED", "20261130"))
HANG_SECONDS = 120

SOURCES = {
    **{p: ROOT / "prompts" for p in sorted((ROOT / "examples").glob("*.agent"))},
    **{p: p.parent / "prompts" for p in sorted((ROOT / "tests" / "invalid").glob("*.agent"))},
    **{
        p: p.parent / "prompts"
        for p in sorted((ROOT / "tests" / "runtime_fixtures").glob("*.agent"))
    },
}

# What a mutation may insert: the language's own words and symbols, and hostile values.
PIECES = [
    *"{}()[]|?,.:=\"#\n",
    "->", "==", "!=", "<=", "agent", "type", "llm", "tool", "approval", "human", "final",
    "on", "error", "next", "if", "not", "and", "or", "in", "null", "true", "list[", "map[",
    "requires approval", "timeout", "retry", "max_steps", "start", "input", "context",
    '"\\ud800"', '"\\u0000"', '"x\\"\\"\\""', '"""', "\ufeff", "\x00", "\u202e", "é",
    "not " * 40, "list[" * 40, "9" * 40, "9" * 20 + "d", "1e999", "-0", "0.5s",
    "x" * 300, '"' + "y" * 9000 + '"', "{{ cycler }}", "{% include 'x' %}",
]  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    prompts: Path | None


TOKEN = re.compile(rb'"(?:[^"\\\n]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:\.[0-9]+)?[a-z]*|\S')
HOSTILE_STRINGS = [
    b'""', b'"\\ud800"', b'"\\u0000"', b'"ends \\"\\"\\""', b'"' + b"s" * 9000 + b'"',
    b'"../../etc/passwd"', b'"sys:exit"', b'"{{ cycler.__init__ }}"', b'"\\u202e"',
    b'"a\\nb"', b'"coding=utf-7"',
]  # fmt: skip
HOSTILE_NUMBERS = [b"0", b"-1", b"1.5", b"9" * 16, b"9" * 5000, b"999999999999999d", b"0ms"]


def mutate(text: bytes, rng: random.Random) -> bytes:
    """A few edits: two thirds keep the words of the language (so many files get past the
    parser to the checks), one third work on raw bytes."""
    data = text
    for _ in range(rng.randint(1, 4)):
        data = _edit_tokens(data, rng) if rng.random() < 0.67 else _edit_bytes(data, rng)
    return data


def _edit_tokens(data: bytes, rng: random.Random) -> bytes:
    tokens = list(TOKEN.finditer(data))
    if not tokens:
        return data
    token = rng.choice(tokens)
    word = token.group(0)
    same_kind = [t.group(0) for t in tokens if t.group(0)[:1].isalpha() == word[:1].isalpha()]
    if word.startswith(b'"'):
        replacement = rng.choice(HOSTILE_STRINGS + same_kind)
    elif word[:1].isdigit():
        replacement = rng.choice(HOSTILE_NUMBERS)
    else:
        replacement = rng.choice([*same_kind, *(p.encode() for p in PIECES[:40])])
    lines = data.split(b"\n")
    match rng.randrange(4):
        case 0 | 1:  # one word for another
            return data[: token.start()] + replacement + data[token.end() :]
        case 2:  # drop a line
            del lines[rng.randrange(len(lines))]
        case _:  # repeat a line
            at = rng.randrange(len(lines))
            lines.insert(at, lines[at])
    return b"\n".join(lines)


def _edit_bytes(text: bytes, rng: random.Random) -> bytes:
    data = bytearray(text)
    at = rng.randrange(len(data) + 1)
    size = rng.randint(1, 40)
    match rng.randrange(6):
        case 0:  # delete a span
            del data[at : at + size]
        case 1:  # duplicate a span
            data[at:at] = data[at : at + size]
        case 2 | 3:  # insert a piece of the language or a hostile value
            data[at:at] = rng.choice(PIECES).encode("utf-8", "surrogatepass")
        case 4:  # flip a byte: mostly no longer UTF-8
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        case _:  # cut the file short
            del data[at:]
    return bytes(data)


def cases(count: int, seed: int) -> Iterator[Case]:
    rng = random.Random(seed)
    sources = list(SOURCES.items())
    for i in range(count):
        if i % 10 == 9:
            size = rng.randint(0, 400)
            yield Case(f"random{i}", rng.randbytes(size), None)
            continue
        source, prompts = rng.choice(sources)
        yield Case(f"{source.stem}-{i}", mutate(source.read_bytes(), rng), prompts)


@contextmanager
def hang_guard(what: str) -> Iterator[None]:
    """Fail (rather than hang the suite) if one input takes longer than HANG_SECONDS."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"{what} ran for over {HANG_SECONDS} s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(HANG_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def invoke(args: list[str]) -> Result:
    with hang_guard(" ".join(args)):
        return CliRunner().invoke(cli, args)


def problem(result: Result, as_json: bool) -> str | None:
    """What is wrong with one run, or None."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"raised {type(result.exception).__name__}: {result.exception}"
    if result.exit_code not in (0, 1, 2):
        return f"exit code {result.exit_code}"
    if "Traceback (most recent call last)" in result.output:
        return "printed a traceback"
    if as_json:
        try:
            document = json.loads(result.stdout)
        except ValueError:
            return f"stdout is not one JSON document: {result.stdout[:300]!r}"
        if not isinstance(document, list):
            return "the JSON document is not a list of diagnostics"
    return None


def run_case(case: Case, folder: Path, seed: int) -> list[str]:
    path = folder / f"{case.name}.agent"
    path.write_bytes(case.data)
    prompts = ["--prompts", str(case.prompts)] if case.prompts else []
    found = []
    for args, as_json in [
        (["check", "--format", "json", str(path), *prompts], True),
        (["compile", str(path), "-o", str(folder / "out"), *prompts], False),
    ]:
        why = problem(invoke(args), as_json)
        if why is not None:
            kept = folder / f"failing-{case.name}.agent"
            kept.write_bytes(case.data)
            found.append(f"{' '.join(args[:2])} on {kept} (seed {seed}): {why}")
    return found


def test_mutated_and_random_agent_files_never_crash_or_hang(tmp_path: Path) -> None:
    failures = [f for case in cases(COUNT, SEED) for f in run_case(case, tmp_path, SEED)]
    assert not failures, "\n".join(failures)


def test_the_fuzzer_finds_a_crash_when_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness can fail: with the parser made to raise, every case is reported."""
    import twelvefold.compiler.api as api

    def broken(text: str, path: str) -> object:
        raise RuntimeError("deliberately broken parser")

    monkeypatch.setattr(api, "parse", broken)
    case = Case("ok", (ROOT / "examples" / "deploybot.agent").read_bytes(), ROOT / "prompts")
    assert len(run_case(case, tmp_path, SEED)) == 2


# ---- odd files ------------------------------------------------------------------------------


def odd_files(folder: Path) -> dict[str, Path]:
    empty = folder / "empty.agent"
    empty.write_bytes(b"")
    bom = folder / "bom.agent"
    bom.write_bytes(b"\xef\xbb\xbf")
    latin1 = folder / "latin1.agent"
    latin1.write_bytes("agent café { start done }\nfinal done\n".encode("latin-1"))
    huge = folder / "huge.agent"
    with huge.open("wb") as file:  # sparse: over the limit without writing a megabyte
        file.truncate(2 * 1024 * 1024)
    fifo = folder / "fifo.agent"
    os.mkfifo(fifo)
    return {
        "empty": empty,
        "bom": bom,
        "latin1": latin1,
        "huge": huge,
        "fifo": fifo,
        "folder": folder,
        "dev-zero": Path("/dev/zero"),
    }


EXPECTED_CODES = {
    "empty": "E101",
    "bom": "E101",
    "latin1": "E007",
    "huge": "E008",
    "fifo": "E008",
    "dev-zero": "E008",
    "folder": "E008",  # not a regular file, as a FIFO: a problem with the input, exit 1
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_CODES))
def test_odd_files_are_one_diagnostic(tmp_path: Path, kind: str) -> None:
    path = odd_files(tmp_path)[kind]
    result = invoke(["check", "--format", "json", str(path)])
    assert problem(result, as_json=True) is None
    (diagnostic,) = json.loads(result.stdout)
    assert diagnostic["code"] == EXPECTED_CODES[kind]
    assert result.exit_code == 1


# ---- real processes -------------------------------------------------------------------------


def test_real_processes_on_odd_and_mutated_files(tmp_path: Path) -> None:
    """As a user runs it: stderr never holds a traceback; a FIFO with no writer and
    /dev/zero are refused without being read (the timeout only guards against a hang)."""
    files = odd_files(tmp_path)
    mutated = list(cases(2, SEED + 1))
    for case in mutated:
        (tmp_path / f"{case.name}.agent").write_bytes(case.data)
    runs = [["--format", "json", str(files["fifo"])], [str(files["fifo"])]]
    runs += [["--format", "json", str(files[kind])] for kind in ("dev-zero", "latin1")]
    runs += [["--format", "json", str(tmp_path / f"{case.name}.agent")] for case in mutated]
    for args in runs:
        done = subprocess.run(
            [sys.executable, "-m", "twelvefold", "check", *args],
            capture_output=True,
            text=True,
            timeout=HANG_SECONDS,
            check=False,
        )
        assert done.returncode in (0, 1), done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        if "json" in args:
            assert isinstance(json.loads(done.stdout), list)
