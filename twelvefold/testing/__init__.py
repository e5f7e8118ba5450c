"""Property tests of compiled agents: `twelvefold test` and the pytest plugin.

This package's own namespace stays free of imports, because the pytest plugin (plugin.py)
is loaded in every pytest run of an environment where twelvefold is installed.
"""

DEFAULT_EXAMPLES = 100
"""Random threads per property when neither the command line nor the ini file says."""
