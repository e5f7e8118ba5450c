"""The server's test pieces, shared by the API, inbox and Slack tests.

`deploy_project(folder)` copies examples/deploybot (agent, tools, prompts) into a folder
with its own twelvefold.toml, so a test can change who may decide. `deploy_responder`
answers the scripted model server for any number of deploybot threads at once, from the
context alone (list the tags, deploy the newest to production, report the URL), so it
survives a server restart. `served` builds a real `Service` (SQLite, the real openai
client against the scripted server) and its app, and starts and stops it:

    async with served(project, tmp_path / "threads.db", openai_server) as s:
        client = s.client("ana")                  # an httpx client with ana's token
        await s.service.launch(Caller("bob", "http"), "deploybot", "deploy")
"""

from __future__ import annotations

import gc
import json
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_helpers import EXAMPLES, RecordingNotifier
from tests.support.openai_server import Reply, ScriptedOpenAI
from twelvefold.runtime.api import AsyncRuntime
from twelvefold.runtime.model import OpenAIModel
from twelvefold.runtime.store import open_store
from twelvefold.server.service import Caller, Service, served_agents
from twelvefold.server.tables import place_of
from twelvefold.server.tokens import TokenStore

ROOT = EXAMPLES.parent
DEPLOY_CONFIG = """\
[approvers]
release-managers = ["ana", "carol"]
"""


def deploy_project(folder: Path, config: str = DEPLOY_CONFIG) -> Path:
    """deploybot in `folder` (its .agent, tools, prompts and `config` as twelvefold.toml);
    returns the .agent file."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLES / "deploybot.agent", folder / "deploybot.agent")
    shutil.copytree(EXAMPLES / "deploybot", folder / "deploybot", dirs_exist_ok=True)
    shutil.copytree(ROOT / "prompts" / "deploybot", folder / "prompts" / "deploybot",
                    dirs_exist_ok=True)  # fmt: skip
    (folder / "twelvefold.toml").write_text(config)
    return folder / "deploybot.agent"


def deploy_choice(context: str) -> dict[str, Any]:
    """What the scripted deploybot model answers, from what it was sent. An input that
    says ASK ME gets a question first (answer it with a text holding ANSWERED)."""
    if "ASK ME" in context and "ANSWERED" not in context:
        return {"type": "RequestMoreInformation", "question": "which build?"}
    if "<list_tags_result>" not in context:
        return {"type": "ListGitTags"}
    if "url: " not in context:
        match = re.search(r"<list_tags_result>\s*tags:\s*\[?\s*-?\s*\"?([\w.]+)", context)
        tag = match.group(1) if match else "v1.2.3"
        return {"type": "DeployBackend", "tag": tag, "env": "production"}
    url = re.search(r"url: (\S+)", context)
    return {"type": "DoneForNow", "message": f"deployed: {url.group(1) if url else '?'}"}


def deploy_responder(body: dict[str, Any]) -> Reply:
    """The scripted server's answer to any deploybot request (tools mode)."""
    messages = body.get("messages", [])
    context = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    return Reply(arguments={"choice": deploy_choice(context)})


@dataclass
class Served:
    """A running service and its app (see `served`)."""

    service: Service
    app: Any
    tokens: TokenStore
    notifier: RecordingNotifier
    issued: dict[str, str] = field(default_factory=dict)

    def token(self, person: str) -> str:
        """A token for `person` (one per person, made on first use)."""
        if person not in self.issued:
            self.issued[person] = self.tokens.create(person)
        return self.issued[person]

    def client(self, person: str | None = None) -> Any:
        """An httpx client talking to the app in process, as `person` (None: no token)."""
        import httpx

        headers = {} if person is None else {"Authorization": f"Bearer {self.token(person)}"}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://testserver",
            headers=headers, event_hooks={"response": [self._settling_done]},
        )  # fmt: skip

    async def _settling_done(self, response: Any) -> None:
        """Each answer is read once the runs that had ended by then have told their
        `on_settled` callbacks (replies, Slack, the tests' own). A run leaves the
        service's table of runs before it tells them, so `?wait=true` may answer first;
        on a loaded machine a test asserting on a reply right after found none."""
        await self.service.settling()

    def caller(self, person: str) -> Caller:
        return Caller(person, "http")


@asynccontextmanager
async def served(
    project: Path | list[Path],
    store: Path | str,
    model_server: ScriptedOpenAI,
    *,
    concurrency: int = 4,
    sweep_seconds: float = 0,
) -> AsyncIterator[Served]:
    """A started Service over `project` (an .agent file, a folder, or a list) with its
    app, on the store at `store` (a SQLite file, or a `postgresql://` URL); the scripted
    model server answers with `deploy_responder` unless it already has
    a responder. Stops the service (grace 10 s) on the way out."""
    from twelvefold.server.app import create_app

    if model_server.responder is None:
        model_server.responder = deploy_responder
    notifier = RecordingNotifier()
    model = OpenAIModel(base_url=model_server.base_url, api_key="test")
    threads = open_store(store)
    runtime = AsyncRuntime(
        threads,
        model=model,
        notifier=notifier,
    )
    places = project if isinstance(project, list) else [project]
    service = Service(
        runtime,
        served_agents(runtime, places),
        concurrency=concurrency,
        sweep_seconds=sweep_seconds,
    )
    tokens = TokenStore(place_of(threads) or store)
    app = create_app(service, tokens=tokens)
    await service.start()
    try:
        yield Served(service, app, tokens, notifier)
    finally:
        await service.stop(grace=10)
        # Closed on this loop: left to the garbage collector, openai's client would close
        # itself on a later test's loop, and that test would fail on "loop is closed".
        await model.aclose()
        tokens.close()
        threads.close()


@pytest.fixture
def collected() -> None:
    """Collect garbage before an async server test starts its event loop. An openai
    client some earlier test left unclosed (the synchronous Runtime opens one per event
    loop) schedules its own closing on whatever loop runs when it is collected; inside a
    test's loop that fails ("Event loop is closed") and anyio fails the test for it."""
    gc.collect()


@pytest.fixture
def deploy_agent(tmp_path: Path) -> Path:
    """deploybot copied into tmp_path/project with the default configuration."""
    return deploy_project(tmp_path / "project")


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
