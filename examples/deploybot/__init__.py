"""deploybot's tools: plain Python functions the runtime calls with typed values."""
