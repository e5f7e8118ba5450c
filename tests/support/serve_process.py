"""A real `twelvefold serve` process on loopback, for the end-to-end server tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.waiting import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServeProcess:
    """`twelvefold serve PLACES --db DB --port P` with `env` added to the environment
    (`--store DB` for a URL given as text)."""

    places: list[Path]
    db: Path | str
    env: Mapping[str, str]
    log: Path
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServeProcess:
        for _ in range(5):  # another test process may take the free port before the server
            self.port = free_port()
            command = [sys.executable, "-m", "twelvefold", "serve", *map(str, self.places)]
            store = ["--db", str(self.db)] if isinstance(self.db, Path) else ["--store", self.db]
            command += [*store, "--port", str(self.port), *self.args]
            logged = self.log.stat().st_size if self.log.exists() else 0
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(
                    command, env={**os.environ, **self.env}, stdout=log, stderr=log
                )
            try:
                wait_for(self._up, f"the server to answer /healthz (log: {self.log})")
                return self
            except AssertionError:
                said = self.log.read_bytes()[logged:]
                if b"address already in use" not in said.lower():
                    raise
        raise AssertionError(f"no free port for the server: {self.log.read_text()}")

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited: {self.log.read_text()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """kill -9: no shutdown at all."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> int:
        """SIGTERM, and the exit code once it exited."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()

    def client(self, token: str | None) -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def make_token(db: Path, person: str) -> str:
    """A token made by `twelvefold token create`, as a user makes one (the first one
    makes the store: `--create`)."""
    command = [sys.executable, "-m", "twelvefold", "token", "create", person]
    done = subprocess.run(
        [*command, "--db", str(db), "--create"],
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


def gated(project: Path) -> None:
    """Make the project's deploy tool (a copy of deploybot's) wait, once it started, until
    the file DEPLOYBOT_GATE exists, leaving `GATE.started-KEY` behind: a barrier that holds
    deploys in flight while a test kills or stops the server."""
    tools = project / "deploybot" / "tools.py"
    source = tools.read_text()
    marker = '    ledger = os.environ.get("DEPLOYBOT_LEDGER")\n'
    assert marker in source
    gate = (
        '    gate = os.environ.get("DEPLOYBOT_GATE")\n'
        "    if gate:\n"
        '        Path(f"{gate}.started-{idempotency_key}").touch()\n'
        "        while not Path(gate).exists():\n"
        "            time.sleep(0.02)\n"
    )
    source = source.replace(marker, gate + marker)
    listing = '    configured = os.environ.get("DEPLOYBOT_TAGS")\n'
    assert listing in source
    list_gate = (  # the keyless list_tags, held the same way by DEPLOYBOT_LIST_GATE
        '    list_gate = os.environ.get("DEPLOYBOT_LIST_GATE")\n'
        "    if list_gate:\n"
        '        Path(f"{list_gate}.started").touch()\n'
        "        while not Path(list_gate).exists():\n"
        "            time.sleep(0.02)\n"
    )
    tools.write_text(source.replace(listing, list_gate + listing, 1))


def started_deploys(gate: Path) -> list[Path]:
    return sorted(gate.parent.glob(f"{gate.name}.started-*"))


def json_of(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def launch_waiting(client: httpx.Client, count: int) -> list[Any]:
    """Launch deploybot `count` times (its scripted model asks for a production deploy)
    and wait until every thread waits for its approval; their views."""
    views = [
        json_of(client.post("/v1/agents/deploybot/threads", json={"input": "deploy"}), 202)
        for _ in range(count)
    ]

    def all_waiting() -> bool:
        return all(
            client.get(f"/v1/threads/{v['thread_id']}").json()["status"] == "waiting" for v in views
        )

    wait_for(all_waiting, "every thread to pause")
    return [client.get(f"/v1/threads/{v['thread_id']}").json() for v in views]
