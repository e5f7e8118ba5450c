"""`twelvefold serve`: the HTTP API, the approval inbox and Slack over one `Service`
(service.py). Imported only by the `serve` and `token` commands (fastapi loads here)."""
