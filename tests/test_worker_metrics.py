"""`twelvefold worker --metrics-address HOST:PORT` (docs/observability.md, "Metrics"): a
real worker process on a real PostgreSQL store and queue runs a thread against the
scripted model; a real HTTP scrape of the worker shows the tokens, cost and step latency
of the thread it ran, the same numbers the store's log records."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.openai_server import ScriptedOpenAI
from tests.support.serve_process import free_port
from tests.support.waiting import wait_for
from tests.test_worker import AGENT, Driver, make_cluster, openai_model_server, run
from twelvefold.runtime.usage import records, totals

__all__ = ["openai_model_server"]  # the fixture, imported for these tests

pytestmark = pytest.mark.postgres


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Each sample of a scrape by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_worker_serves_the_tokens_cost_and_latency_of_the_threads_it_ran(
    tmp_path: Path, postgres_url: str, openai_model_server: ScriptedOpenAI
) -> None:
    cluster = make_cluster(tmp_path, postgres_url, openai_model_server)
    driver = Driver(cluster, openai_model_server)
    (thread_id,) = run(driver.launch(1))
    port = free_port()
    command = [sys.executable, "-m", "twelvefold", "worker", str(AGENT), "--store",
               cluster.store_url, "--concurrency", "2", "--sweep-seconds", "1",
               "--model", "gpt-4o-mini", "--path", str(AGENT.parent),
               "--metrics-address", f"127.0.0.1:{port}"]  # fmt: skip
    with (tmp_path / "metrics-worker.log").open("ab") as log:
        env = {**os.environ, **cluster.env}
        worker = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    cluster.workers = [worker]
    try:

        def status() -> str:
            return str(run(driver.runtime.get(thread_id)).status)

        wait_for(lambda: status() == "waiting", "the worker to run the thread to its approval")
        spent = totals(records(run(driver.runtime.events(thread_id))))
        assert spent.input_tokens > 0 and spent.cost_usd > 0

        scraped: list[str] = []

        def scrape() -> bool:
            assert worker.poll() is None, (tmp_path / "metrics-worker.log").read_text()
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            except httpx.HTTPError:
                return False
            scraped.append(reply.text)
            return reply.status_code == 200

        wait_for(scrape, "the worker's metrics to answer")
        found = samples(scraped[-1])
        labels = (("agent", "crashbot"), ("direction", "input"), ("model", "gpt-4o-mini"))
        assert found["twelvefold_model_tokens_total", labels] == spent.input_tokens
        priced = (("agent", "crashbot"), ("model", "gpt-4o-mini"))
        assert found["twelvefold_model_cost_usd_total", priced] == pytest.approx(spent.cost_usd)
        llm = (("agent", "crashbot"), ("kind", "llm"))
        assert found["twelvefold_step_latency_seconds_count", llm] == spent.model_calls
    finally:
        cluster.stop()


def test_a_bad_metrics_address_is_one_line(tmp_path: Path) -> None:
    for address in ["nonsense", "0.0.0.0:99999"]:
        done = subprocess.run(
            [sys.executable, "-m", "twelvefold", "worker", str(AGENT), "--store",
             "postgresql://nowhere/x", "--metrics-address", address],
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr  # an error, not a usage error (2)
        assert done.stderr.startswith("error: --metrics-address: "), done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
