"""Property tests of compiled agents: `twelvefold test` and the pytest plugin.

This package's own namespace stays free of imports, because the pytest plugin (plugin.py)
is loaded in every pytest run of an environment where twelvefold is installed.
"""

DEFAULT_EXAMPLES = 100
"""Random threads per property when neither the command line nor the ini file says."""

MAX_EXAMPLES = 100_000
"""The most random threads per property `twelvefold test --examples` takes: a thousand
times the default, some minutes to hours of work; past it a number is a mistake (10**20
would run for ever)."""
