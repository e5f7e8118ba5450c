"""Render the pictures in docs/images/ from the example agents: `make graphs`.

For each example agent: `<name>.mmd`, `<name>.dot`, `<name>.svg`, `<name>.png`; and one
traced thread of deploybot (`deploybot-thread.*`, from `deploybot-thread.json`, an event
log in the store's format) to show the overlay.

The DOT and Mermaid text is deterministic, so tests/test_graphs_docs.py regenerates it
and compares. SVG and PNG bytes depend on the installed Graphviz, so instead
`graphs.json` records, for each picture, the digest of the DOT it was rendered from and
of the image itself: a stale or hand-edited image fails the same test.

    python -m docs.make_graphs           write everything
    python -m docs.make_graphs --check   exit 1 when a committed picture is stale
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twelvefold.compiler import compile_file
from twelvefold.compiler.program import Program
from twelvefold.compiler.render import graph_view, overlay, render_image, to_dot, to_mermaid

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
EXAMPLES = ROOT / "examples"
AGENTS = ("deploybot", "calculator")
THREAD = "deploybot-thread"
MANIFEST = "graphs.json"
GUIDE = ROOT / "docs" / "graphs.md"
"""Shows calculator's Mermaid inline, so GitHub renders it on the page."""
INLINE = "calculator"


@dataclass(frozen=True)
class Picture:
    stem: str
    dot: str
    mermaid: str


def program_of(agent: str) -> Program:
    compilation = compile_file(EXAMPLES / f"{agent}.agent", generate_code=False)
    if not compilation.ok or compilation.program is None:
        raise SystemExit(f"examples/{agent}.agent does not check: {compilation.diagnostics}")
    return compilation.program


def thread_events() -> list[dict[str, Any]]:
    """A deploybot thread, encoded as the store keeps it: a tag lookup, a staging deploy
    that fails, then a production deploy that now waits for a release manager."""
    deploy = {"type": "DeployBackend", "value": {"tag": "v1.2.3", "env": "staging"}}
    production = {"type": "DeployBackend", "value": {"tag": "v1.2.3", "env": "production"}}
    error = {"type": "ConnectionError", "message": "staging cluster unreachable"}
    return [
        {"kind": "started", "step": "decide", "input": "deploy v1.2.3 to staging, then prod"},
        {"kind": "model_output", "step": "decide", "output": {"type": "ListGitTags", "value": {}}},
        {"kind": "tool_started", "step": "list_tags", "key": "list_tags-1"},
        {
            "kind": "tool_result",
            "step": "list_tags",
            "result": {"type": "GitTags", "value": {"tags": ["v1.2.3", "v1.2.2"]}},
        },
        {"kind": "model_output", "step": "decide", "output": deploy},
        {"kind": "tool_started", "step": "deploy", "key": "deploy-1"},
        {"kind": "step_failed", "step": "deploy", "error": error},
        {"kind": "model_output", "step": "decide", "output": production},
        {"kind": "notified", "step": "approve_deploy", "channels": ["stdout"]},
    ]


def traced_picture(program: Program, encoded: Sequence[dict[str, Any]]) -> Picture:
    """Decode the log with the agent's own codec and replay it through its reducer."""
    from twelvefold.runtime.loading import load_agent

    with tempfile.TemporaryDirectory() as cache:
        agent = load_agent(EXAMPLES / "deploybot.agent", cache_dir=Path(cache))
        events = [agent.codec.decode_event(item) for item in encoded]
        view = graph_view(program, overlay(program, events, agent.module))
    return Picture(THREAD, to_dot(view), to_mermaid(view))


def pictures() -> list[Picture]:
    found = []
    for agent in AGENTS:
        view = graph_view(program_of(agent))
        found.append(Picture(agent, to_dot(view), to_mermaid(view)))
    found.append(traced_picture(program_of("deploybot"), thread_events()))
    return found


def digest(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def write_all(images: Path = IMAGES) -> None:
    images.mkdir(parents=True, exist_ok=True)
    (images / f"{THREAD}.json").write_text(json.dumps(thread_events(), indent=2) + "\n")
    manifest: dict[str, dict[str, str]] = {}
    for picture in pictures():
        (images / f"{picture.stem}.dot").write_text(picture.dot, encoding="utf-8")
        (images / f"{picture.stem}.mmd").write_text(picture.mermaid, encoding="utf-8")
        entry = {"dot": digest(picture.dot)}
        for image_format in ("svg", "png"):
            image = render_image(picture.dot, image_format)
            (images / f"{picture.stem}.{image_format}").write_bytes(image)
            entry[image_format] = digest(image)
        manifest[picture.stem] = entry
    (images / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def stale(images: Path = IMAGES, guide: Path = GUIDE) -> list[str]:
    """What is out of date in `images`, as sentences; empty when everything is current."""
    problems = []
    manifest_path = images / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    for picture in pictures():
        for suffix, text in (("dot", picture.dot), ("mmd", picture.mermaid)):
            path = images / f"{picture.stem}.{suffix}"
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                problems.append(f"{path.name} differs from what the renderer makes now")
        entry = manifest.get(picture.stem, {})
        if entry.get("dot") != digest(picture.dot):
            problems.append(f"{picture.stem}: the images were rendered from older DOT")
        for image_format in ("svg", "png"):
            path = images / f"{picture.stem}.{image_format}"
            if not path.is_file() or entry.get(image_format) != digest(path.read_bytes()):
                problems.append(f"{path.name} is not the image `make graphs` rendered")
        if picture.stem == INLINE and f"```mermaid\n{picture.mermaid}```" not in guide.read_text():
            problems.append(f"{guide.name}'s mermaid block is not the current {INLINE}.mmd")
    return problems


def main(argv: Sequence[str] = ()) -> int:
    if "--check" in argv:
        problems = stale()
        for problem in problems:
            print(f"stale: {problem}", file=sys.stderr)
        if problems:
            print("run `make graphs` and commit docs/images/", file=sys.stderr)
        return 1 if problems else 0
    write_all()
    print(f"wrote {IMAGES.relative_to(ROOT)}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
