"""Documentation helpers: `python -m docs.make_graphs` renders docs/images/."""
