"""The per-process series of `/metrics` (docs/observability.md, "Metrics"): what this
process did, counted from the events it records (the runtime's `on_event` hook). `serve`
shows them at its `/metrics` beside the store's numbers; `twelvefold worker
--metrics-address HOST:PORT` shows them on prometheus_client's own HTTP server. Each
process counts only its own work, from zero at its start: Prometheus scrapes every
process and `sum(rate(...))` adds them up. fastapi is not imported here (the worker's
import stays light)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from twelvefold.runtime.loop import Engine, Thread
from twelvefold.runtime.types import KIND_OF_EVENT, Event, ModelOutput, OutputRejected, StepFailed
from twelvefold.runtime.usage import paid_call, valid_cost, valid_tokens

LATENCY_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
"""Seconds: from a fast tool to a slow model call with retries."""
_MODEL_EVENTS = (ModelOutput, OutputRejected)


class ProcessMetrics:
    """A registry (never prometheus_client's process-global one, so two in one process,
    as in the tests, count apart) and the counters this process's events feed."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "twelvefold_step_latency_seconds",
            "How long steps took, by agent and step kind (llm: the model call, a judge's "
            "included; tool: the function call), as recorded on their events.",
            ["agent", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "twelvefold_model_tokens",
            "Model tokens spent, by agent, model and direction (input or output).",
            ["agent", "model", "direction"],
            registry=self.registry,
        )
        self.cost = Counter(
            "twelvefold_model_cost_usd",
            "US dollars spent on model calls (priced when made), by agent and model.",
            ["agent", "model"],
            registry=self.registry,
        )
        self.unpriced = Counter(
            "twelvefold_model_unpriced_calls",
            "Model calls whose cost is unknown (no price, or no token counts).",
            ["agent", "model"],
            registry=self.registry,
        )
        self.events = Counter(
            "twelvefold_events",
            "Events this process recorded, by agent and kind.",
            ["agent", "kind"],
            registry=self.registry,
        )

    def install(self, engine: Engine) -> None:
        """Count every event `engine` records, after the hook it had (if any)."""
        hooked = engine.on_event

        def announce(thread: Thread, event: Event) -> None:
            if hooked is not None:
                hooked(thread, event)
            self.observe(thread, event)

        engine.on_event = announce

    def observe(self, thread: Thread, event: Event) -> None:
        """Count one recorded event (the runtime's `on_event` hook: never raises)."""
        try:
            self._observe(thread, event)
        except Exception:  # pragma: no cover - metrics never break a thread
            return

    def _observe(self, thread: Thread, event: Event) -> None:
        agent = thread.agent.name
        self.events.labels(agent, KIND_OF_EVENT.get(type(event), "other")).inc()
        usage = event.usage
        state = thread.agent.spec.states.get(event.step)
        if usage is None or state is None:
            return
        if usage.latency_ms is not None and usage.latency_ms >= 0 and state.kind in ("llm", "tool"):
            self.latency.labels(agent, state.kind).observe(usage.latency_ms / 1000)
        if state.kind != "llm":
            return
        # A failed step's replies were paid for too (runtime/model.py, `ModelError.usage`).
        if not isinstance(event, _MODEL_EVENTS) and not (
            isinstance(event, StepFailed) and paid_call(usage)
        ):
            return
        model = thread.model or "unknown"
        for direction, count in (("input", usage.input_tokens), ("output", usage.output_tokens)):
            if valid_tokens(count) and count > 0:  # a huge one would overflow the counter
                self.tokens.labels(agent, model, direction).inc(count)
        if valid_cost(usage.cost_usd):
            self.cost.labels(agent, model).inc(usage.cost_usd)
        else:
            self.unpriced.labels(agent, model).inc()


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9464` for IPv6) as (host, port). Raises ValueError with a
    one-line reason for anything else."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"give HOST:PORT (e.g. 127.0.0.1:9464), not {text!r}")
    return host, int(port)
