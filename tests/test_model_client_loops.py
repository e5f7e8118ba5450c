"""One `OpenAIModel` shared by runtimes on several event loops: each loop has its own client.

The openai client's connection pool belongs to the event loop it was opened on. Two
synchronous `Runtime`s in two OS threads each run their own loop; sharing one model object,
each must get a pool of its own, and closing one runtime closes its pool only. Real parts:
the openai client against the scripted server on loopback, each scenario in a fresh process
so that a pool left open shows as aiohttp's "Unclosed client session" on stderr at exit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.openai_server import Reply, ScriptedOpenAI

FIXTURES = Path(__file__).parent / "runtime_fixtures"

TWO_THREADS = """
import sys, threading
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.model import OpenAIModel
from twelvefold.runtime.store import MemoryStore

base_url, fixtures = sys.argv[1], sys.argv[2]
agent = fixtures + "/counter.agent"
model = OpenAIModel(model="m", base_url=base_url, api_key="k", transport_retries=0)
step = threading.Barrier(2, timeout=600)  # a bound on a hang, not a timing
results = {"a": [], "b": []}

def launches(rt, name, n):
    for _ in range(n):
        results[name].append(rt.launch(agent, "count").status)

def runtime():
    return Runtime(MemoryStore(), model=model, tool_paths=[fixtures])

def a():
    rt = runtime()
    step.wait(); launches(rt, "a", 3)        # side by side with b (calls overlap)
    step.wait(); rt.close()                   # b's pool must survive this
    step.wait()                               # b runs alone on its pool
    step.wait(); rt = runtime(); launches(rt, "a", 2)   # a new loop while b runs
    step.wait()                               # b closes
    step.wait(); launches(rt, "a", 2); rt.close()

def b():
    rt = runtime()
    step.wait(); launches(rt, "b", 3)
    step.wait()
    step.wait(); launches(rt, "b", 2)
    step.wait(); launches(rt, "b", 2)
    step.wait(); rt.close()
    step.wait()

def guarded(side):
    try:
        side()
    except BaseException:
        step.abort()  # the other side stops at its next wait instead of waiting it out
        raise

threads = [threading.Thread(target=guarded, args=(f,)) for f in (a, b)]
for t in threads: t.start()
for t in threads: t.join()
print(" ".join(results["a"]))
print(" ".join(results["b"]))
"""


def test_runtimes_in_two_threads_share_one_model_each_on_its_own_pool(
    openai_server: ScriptedOpenAI,
) -> None:
    """Every call of either thread succeeds, closing one runtime leaves the other's pool
    working, and every pool is closed by its own runtime: nothing is reported unclosed."""
    openai_server.latency = 0.05  # the two threads' calls are in flight at once
    openai_server.responder = lambda body: Reply(arguments={"choice": {"type": "Done", "n": 0}})
    done = subprocess.run(
        [sys.executable, "-c", TWO_THREADS, openai_server.base_url, str(FIXTURES)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    a, b = done.stdout.splitlines()
    assert a.split() == ["finished"] * 7, done.stdout + done.stderr
    assert b.split() == ["finished"] * 7, done.stdout + done.stderr
    assert done.stderr.strip() == "", done.stderr
    assert len(openai_server.requests) == 14
