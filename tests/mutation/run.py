"""Run the committed mutants and report the score: `make mutants` (python -m tests.mutation).

Each mutant is judged in a subprocess of its own by `twelvefold test` with a fixed seed
(a generated module's mutant: the patched `.py` against its `.agent` source with
`--source`; a runtime mutant: both examples' `.agent` files, with the patched
runtime/spec.py in place of the module). The mutant is killed when that run fails, which
includes a module that does not import; it survives when every property passes. A run
that outlives the timeout is reported as timed out, a patch whose text is no longer there
as stale; both fail the harness, as does a survivor that is not marked equivalent.

Exit status: 0 when every non-equivalent mutant is killed and none is stale or timed
out, 1 otherwise, 2 usage.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .mutants import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PROMPTS = ROOT / "prompts"
SPEC_SOURCE = ROOT / "runtime" / "spec.py"

Verdict = Literal["killed", "survived", "stale", "timed out"]


class StalePatch(Exception):
    """A mutant's text is not (or not exactly once) in what it patches."""


@dataclass(frozen=True)
class Outcome:
    mutant: Mutant
    verdict: Verdict
    detail: str = ""


def original_text(mutant: Mutant) -> str:
    """What `mutant` patches: the compiler's current output for its example, or spec.py."""
    if mutant.target == "spec":
        return SPEC_SOURCE.read_text(encoding="utf-8")
    from twelvefold.compiler import compile_file

    result = compile_file(EXAMPLES / f"{mutant.target}.agent", prompts_dir=PROMPTS)
    ((_, source),) = result.files.items()
    return source


def mutated_text(mutant: Mutant, original: str) -> str:
    """`original` with `mutant`'s patches applied; StalePatch when one does not apply."""
    text = original
    for old, new in mutant.patches:
        found = text.count(old)
        if found != 1:
            where = "is not in" if found == 0 else f"occurs {found} times in"
            raise StalePatch(f"{old!r} {where} the current {mutant.target}")
        text = text.replace(old, new)
    if text == original:
        raise StalePatch("the patch changes nothing")
    return text


def judge_command(mutant: Mutant, patched: Path, *, seed: int, examples: int) -> list[str]:
    """The `twelvefold test` run that judges `mutant`, whose patched text is in `patched`."""
    child = [sys.executable, "-m", "tests.mutation.child"]
    settings = ["--seed", str(seed), "--examples", str(examples), "--prompts", str(PROMPTS)]
    if mutant.target == "spec":
        agents = [str(EXAMPLES / "deploybot.agent"), str(EXAMPLES / "calculator.agent")]
        return [*child, "--spec", str(patched), "test", *agents, *settings]
    source = EXAMPLES / f"{mutant.target}.agent"
    return [*child, "test", str(patched), "--source", str(source), *settings]


def judge(
    mutant: Mutant, original: str, into: Path, *, seed: int, examples: int, timeout: float
) -> Outcome:
    try:
        text = mutated_text(mutant, original)
    except StalePatch as exc:
        return Outcome(mutant, "stale", str(exc))
    folder = into / mutant.id
    folder.mkdir()
    patched = folder / ("spec.py" if mutant.target == "spec" else f"{mutant.target}.py")
    patched.write_text(text, encoding="utf-8")
    command = judge_command(mutant, patched, seed=seed, examples=examples)
    try:
        # Run in the mutant's own folder: `.agent` files compile into a fresh cache there,
        # so the judge is always the current compiler's output, never an older cached one.
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        run = subprocess.run(
            command,
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Outcome(mutant, "timed out", f"after {timeout:g} s")
    if run.returncode == 0:
        return Outcome(mutant, "survived")
    failed = [line.strip() for line in run.stdout.splitlines() if line.lstrip().startswith("FAIL")]
    last = (run.stderr.strip().splitlines() or [""])[-1]
    return Outcome(mutant, "killed", ", ".join(failed) or last or f"exit {run.returncode}")


def patch_text(mutant: Mutant) -> str:
    lines: list[str] = []
    for old, new in mutant.patches:
        lines += ["-" + line for line in old.splitlines()] or ["-"]
        lines += ["+" + line for line in new.splitlines()] or ["+"]
    return "\n".join("      " + line for line in lines)


def report(outcomes: Sequence[Outcome]) -> tuple[str, bool]:
    """The printed summary, and whether every non-equivalent mutant was killed."""
    count = {v: sum(o.verdict == v for o in outcomes) for v in Verdict.__args__}  # type: ignore[attr-defined]
    scored = [o for o in outcomes if o.mutant.equivalent is None and o.verdict != "stale"]
    killed = sum(o.verdict == "killed" for o in scored)
    equivalent = [o for o in outcomes if o.mutant.equivalent is not None]
    lines = [
        f"{len(outcomes)} mutants: {count['killed']} killed, {count['survived']} survived, "
        f"{count['stale']} stale, {count['timed out']} timed out; "
        f"{len(equivalent)} marked equivalent",
        f"score: {killed}/{len(scored)} non-equivalent mutants killed"
        + (f" ({100 * killed / len(scored):.1f}%)" if scored else ""),
    ]
    bad = [o for o in outcomes if o.verdict != "killed" and o.mutant.equivalent is None]
    for o in bad:
        lines.append(f"  {o.verdict.upper()}  {o.mutant.id} ({o.mutant.target}) {o.detail}")
        lines.append(patch_text(o.mutant))
    for o in equivalent:
        if o.verdict == "killed":
            lines.append(f"  KILLED but marked equivalent: {o.mutant.id}: {o.detail}")
        else:
            lines.append(f"  equivalent  {o.mutant.id}: {o.mutant.equivalent}")
    wrongly_equivalent = any(o.verdict == "killed" for o in equivalent)
    return "\n".join(lines), not bad and not wrongly_equivalent


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__)
    parser.add_argument("ids", nargs="*", help="mutant ids (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="processes at once (default 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--examples", type=int, default=20, help="threads per property")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
    args = parser.parse_args(argv)
    unknown = [i for i in args.ids if i not in MUTANTS]
    if unknown:
        parser.error(f"no mutant {', '.join(unknown)}")
    mutants = [MUTANTS[i] for i in args.ids] if args.ids else list(MUTANTS.values())
    originals: dict[str, str] = {}
    for mutant in mutants:
        if mutant.target not in originals:
            originals[mutant.target] = original_text(mutant)

    with tempfile.TemporaryDirectory(prefix="twelvefold-mutants-") as tmp:

        def one(mutant: Mutant) -> Outcome:
            outcome = judge(
                mutant,
                originals[mutant.target],
                Path(tmp),
                seed=args.seed,
                examples=args.examples,
                timeout=args.timeout,
            )
            print(f"{outcome.verdict:9}  {mutant.id}  {outcome.detail}", flush=True)
            return outcome

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            outcomes = list(pool.map(one, mutants))
    text, ok = report(outcomes)
    print()
    print(text)
    print(
        f"\n(seed {args.seed}, {args.examples} threads per property; "
        f"reproduce one: python -m tests.mutation ID)"
    )
    sys.exit(0 if ok else 1)
