"""pytest plugin entry point (property tests for .agent files land with the testing issue)."""
