"""The mutation harness itself (the mutants are run by `make mutants`, not here): every
committed patch still applies, a stale one is reported, a runtime mutant really replaces
runtime/spec.py in its process, and the score fails on a survivor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.mutation.mutants import MUTANTS, Mutant
from tests.mutation.run import (
    ROOT,
    Outcome,
    StalePatch,
    mutated_text,
    original_text,
    report,
)


def test_every_mutant_applies_to_what_it_patches_today() -> None:
    originals = {t: original_text(Mutant("x", t, ())) for t in ("deploybot", "calculator", "spec")}
    for mutant in MUTANTS.values():
        assert mutated_text(mutant, originals[mutant.target]) != originals[mutant.target]


def test_a_patch_that_no_longer_applies_is_stale() -> None:
    with pytest.raises(StalePatch, match="is not in"):
        mutated_text(Mutant("gone", "spec", (("no such text", "x"),)), "some text")
    with pytest.raises(StalePatch, match="occurs 2 times"):
        mutated_text(Mutant("twice", "spec", (("a", "b"),)), "a a")


def test_a_runtime_mutant_replaces_the_module_before_anything_imports_it(
    tmp_path: Path,
) -> None:
    spec = tmp_path / "spec.py"
    spec.write_text(
        mutated_text(MUTANTS["s-request-id-format"], original_text(MUTANTS["s-request-id-format"])),
        encoding="utf-8",
    )
    program = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tests.mutation.child import SPEC_MODULE, PatchedModule\n"
        f"sys.meta_path.insert(0, PatchedModule(SPEC_MODULE, Path({str(spec)!r})))\n"
        "import twelvefold.runtime as runtime\n"
        "from twelvefold.runtime.spec import request_id\n"
        "assert runtime.AgentSpec.__module__ == SPEC_MODULE\n"
        "print(request_id('approve', 3))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == "approve:3"  # the mutant's format, not the module's "approve-3"


def _outcome(id: str, verdict: str, equivalent: str | None = None) -> Outcome:
    return Outcome(Mutant(id, "spec", (("old", "new"),), equivalent), verdict)  # type: ignore[arg-type]


def test_the_score_fails_on_a_survivor_and_shows_its_patch() -> None:
    text, ok = report([_outcome("a", "killed"), _outcome("b", "survived")])
    assert not ok
    assert "score: 1/2 non-equivalent mutants killed (50.0%)" in text
    assert "SURVIVED  b" in text and "-old" in text and "+new" in text


def test_equivalent_mutants_are_left_out_of_the_score_but_must_survive() -> None:
    text, ok = report([_outcome("a", "killed"), _outcome("e", "survived", "same body")])
    assert ok and "score: 1/1" in text and "equivalent  e: same body" in text
    _, ok = report([_outcome("a", "killed"), _outcome("e", "killed", "same body")])
    assert not ok


def test_stale_and_timed_out_mutants_fail_the_harness() -> None:
    for verdict in ("stale", "timed out"):
        _, ok = report([_outcome("a", "killed"), _outcome("b", verdict)])
        assert not ok
