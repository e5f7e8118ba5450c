"""The mutation harness: `make mutants` (never part of `make test`).

A fixed, committed set of small textual patches (mutants.py) over the compiler's current
output for the examples and over runtime/spec.py; each is judged by `twelvefold test`
with a fixed seed in a subprocess of its own (run.py), and the score says how many of the
non-equivalent ones the properties kill.
"""
