"""`--prompts DIR` wherever an agent is compiled from a `.agent` file to run: `run`,
`resume`, `send`, `serve` (and `worker`, which shares serve's loading), with the
semantics `check` and `compile` give it: the folder of the named agent's templates,
relative to the current folder. A thread's version records the folder, so a paused
thread resumes with it in a later process that is given no `--prompts`.

Real parts: the CLI in subprocesses, a SQLite store, the real openai + instructor client
against the scripted model server on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.openai_server import ScriptedOpenAI
from tests.support.serve_process import ServeProcess
from tests.support.waiting import wait_for
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.versions import AgentVersion

AGENT = """agent greet { input string start decide }
type Draft { text: string }
type Done { message: string }
llm decide -> Draft { prompt "decide.j2" on Draft -> check }
approval check(Draft) {
  ask "Send {{ text }}?"
  on approved -> finish
  on rejected -> dropped
}
llm finish -> Done { prompt "finish.j2" on Done -> done }
final done(Done)
final dropped(Draft)
"""


def project(folder: Path) -> Path:
    """A project whose templates are in `templ/`, not in a `prompts/` folder: only
    `--prompts templ` finds them."""
    folder.mkdir()
    (folder / "greet.agent").write_text(AGENT)
    (folder / "templ").mkdir()
    (folder / "templ" / "decide.j2").write_text("DECIDE-TEMPLATE for {{ input }}")
    (folder / "templ" / "finish.j2").write_text("FINISH-TEMPLATE")
    return folder


def twelvefold(
    *arguments: str, cwd: Path, server: ScriptedOpenAI, model: bool = True
) -> subprocess.CompletedProcess[str]:
    """The CLI in `cwd`, its model the scripted server (`--model` unless not `model`)."""
    env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test"}
    env.pop("TWELVEFOLD_DB", None)
    env.pop("TWELVEFOLD_STORE", None)
    named = ["--model", "gpt-4o-mini"] if model else []
    return subprocess.run(
        [sys.executable, "-m", "twelvefold", *arguments, *named],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def stored_version(db: Path, thread_id: str) -> dict[str, str]:
    """The prompt folders the thread's stored version records (runtime/versions.py)."""
    store = SqliteStore(db)
    try:
        digest = store.info(thread_id).version
        assert digest is not None
        body = store.load_version(digest)
        assert body is not None
        return dict(AgentVersion.from_stored(digest, body).prompt_dirs)
    finally:
        store.close()


def approve_and_finish(
    view: dict[str, Any], cwd: Path, server: ScriptedOpenAI, *options: str
) -> None:
    """`resume --approve` the thread `view` shows waiting at `check`, from `cwd`: it runs
    `finish`, whose request renders `finish.j2`, and finishes."""
    resumed = twelvefold(
        "resume", view["thread_id"], "--request", view["request"], "--approve", "--json",
        *options, cwd=cwd, server=server,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "finished"
    assert "FINISH-TEMPLATE" in sent(server.requests[1])


def sent(request: dict[str, Any]) -> str:
    """Everything a model request's messages say, as one string."""
    return json.dumps(request["messages"])


@pytest.mark.parametrize("command", ["run", "resume", "send", "serve", "worker"])
def test_every_command_that_runs_an_agent_takes_prompts(command: str) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "twelvefold", command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--prompts DIRECTORY" in shown.stdout


def test_run_reads_templates_from_prompts_and_a_paused_thread_resumes_with_them(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    folder = project(tmp_path / "p")
    openai_server.reply_tool({"text": "hi"})
    openai_server.reply_tool({"message": "sent"})

    ran = twelvefold(
        "run", "greet.agent", "--prompts", "templ", "--input", "ana", "--json",
        cwd=folder, server=openai_server,
    )  # fmt: skip

    assert ran.returncode == 0, ran.stderr
    view = json.loads(ran.stdout)
    assert (view["status"], view["step"]) == ("waiting", "check")
    assert "DECIDE-TEMPLATE for ana" in sent(openai_server.requests[0])
    assert stored_version(folder / ".twelvefold" / "threads.db", view["thread_id"]) == {
        "greet.agent": "templ"
    }
    # A later process, from another folder and without --prompts: the thread's version
    # recorded `templ`, so its next model step renders `finish.j2` from there.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    approve_and_finish(
        view, elsewhere, openai_server, "--db", str(folder / ".twelvefold" / "threads.db")
    )


def test_resume_takes_prompts_too(tmp_path: Path, openai_server: ScriptedOpenAI) -> None:
    folder = project(tmp_path / "p")
    openai_server.reply_tool({"text": "hi"})
    openai_server.reply_tool({"message": "sent"})
    ran = twelvefold(
        "run", "greet.agent", "--prompts", "templ", "--input", "ana", "--json",
        cwd=folder, server=openai_server,
    )  # fmt: skip
    view = json.loads(ran.stdout)

    approve_and_finish(view, folder, openai_server, "--prompts", "templ")


def test_run_without_prompts_refuses_before_any_thread_exists(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    folder = project(tmp_path / "p")

    ran = twelvefold("run", "greet.agent", "--input", "ana", cwd=folder, server=openai_server)

    assert ran.returncode == 1
    assert 'prompt "decide.j2" does not exist' in ran.stderr
    assert "--prompts DIR" in ran.stderr
    assert openai_server.requests == []


def test_serve_takes_prompts(
    tmp_path: Path, openai_server: ScriptedOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = project(tmp_path / "p")
    monkeypatch.chdir(folder)  # `--prompts templ` is relative to the server's folder
    openai_server.reply_tool({"text": "hi"})
    env = {"OPENAI_BASE_URL": openai_server.base_url, "OPENAI_API_KEY": "test"}
    server = ServeProcess(
        [Path("greet.agent")], tmp_path / "threads.db", env, tmp_path / "serve.log",
        ("--insecure-local", "--prompts", "templ", "--model", "gpt-4o-mini"),
    )  # fmt: skip
    try:
        server.start()
        with server.client(None) as client:
            launched = client.post("/v1/agents/greet/threads", json={"input": "ana"})
            assert launched.status_code == 202, launched.text
            thread = launched.json()["thread_id"]

            def waiting() -> bool:
                return bool(client.get(f"/v1/threads/{thread}").json()["status"] == "waiting")

            wait_for(waiting, "the thread to wait for its approval")
    finally:
        server.stop()
    assert "DECIDE-TEMPLATE for ana" in sent(openai_server.requests[0])


# ---- a module compiled with `--prompts DIR` knows where its templates are ---------------


def compile_to_build(folder: Path, templates: str, server: ScriptedOpenAI) -> None:
    """`twelvefold compile greet.agent --prompts TEMPLATES -o build` in `folder`."""
    compiled = twelvefold(
        "compile", "greet.agent", "--prompts", templates, "-o", "build",
        cwd=folder, server=server, model=False,
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr


@pytest.mark.parametrize("templates", ["templ", "te\"m'pl \\ x"])
def test_a_module_compiled_with_prompts_runs_with_its_templates_from_any_folder(
    tmp_path: Path, openai_server: ScriptedOpenAI, templates: str
) -> None:
    folder = project(tmp_path / "p")
    if templates != "templ":  # a folder name a Python literal must escape
        (folder / "templ").rename(folder / templates)
    compile_to_build(folder, templates, openai_server)
    fresh = twelvefold(
        "compile", "--check", "greet.agent", "--prompts", templates, "-o", "build",
        cwd=folder, server=openai_server, model=False,
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr
    openai_server.reply_tool({"text": "hi"})
    openai_server.reply_tool({"message": "sent"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    ran = twelvefold(
        "run", str(folder / "build" / "greet.py"), "--input", "ana", "--json",
        cwd=elsewhere, server=openai_server,
    )  # fmt: skip

    assert ran.returncode == 0, ran.stderr
    view = json.loads(ran.stdout)
    assert view["status"] == "waiting"
    assert "DECIDE-TEMPLATE for ana" in sent(openai_server.requests[0])
    approve_and_finish(view, elsewhere, openai_server)


def test_a_judge_prompt_and_an_included_template_are_looked_for_before_a_thread_exists(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    """A module's spec names its judge's prompt too, and the templates a prompt includes
    are followed: either missing is refused at launch, not after a paid model call."""
    folder = project(tmp_path / "p")
    agent = folder / "greet.agent"
    agent.write_text(AGENT.replace('prompt "decide.j2"', 'prompt "decide.j2" judge "judge.j2"'))
    (folder / "templ" / "judge.j2").write_text("JUDGE {% include 'rubric/strict.j2' %}")
    (folder / "templ" / "rubric").mkdir()
    (folder / "templ" / "rubric" / "strict.j2").write_text("{% include 'rubric/tone.j2' %}")
    (folder / "templ" / "rubric" / "tone.j2").write_text("be kind")
    compile_to_build(folder, "templ", openai_server)
    (folder / "templ" / "rubric" / "tone.j2").unlink()  # two includes deep
    (folder / "templ" / "judge.j2").rename(folder / "templ" / "judged.j2")

    ran = twelvefold("run", "build/greet.py", "--input", "ana", cwd=folder, server=openai_server)

    assert ran.returncode == 1
    assert "prompt templates not found in" in ran.stderr
    assert "(judge.j2)" in ran.stderr  # the judge's prompt; its includes are not reached
    (folder / "templ" / "judged.j2").rename(folder / "templ" / "judge.j2")
    ran = twelvefold("run", "build/greet.py", "--input", "ana", cwd=folder, server=openai_server)
    assert ran.returncode == 1
    templates = folder / "templ"
    # The folder is the right one: the advice is about the include, not `--prompts`.
    assert ran.stderr.splitlines() == [
        f"error: {folder / 'build' / 'greet.py'}: prompt template rubric/tone.j2, which "
        f"rubric/strict.j2 loads, is not in {templates}; add it there, or fix the name "
        "rubric/strict.j2 loads"
    ]
    assert openai_server.requests == []
    assert not (folder / ".twelvefold" / "threads.db").exists()  # no thread, no store


@pytest.mark.parametrize("broken", ["{% if %}{{ x ", b"\xff\xfe not text"])
def test_a_template_that_can_never_render_is_refused_before_a_thread_exists(
    tmp_path: Path, openai_server: ScriptedOpenAI, broken: str | bytes
) -> None:
    """Edited after the module was compiled, an included template that is not valid
    Jinja2 (or not UTF-8) is refused at launch, not after the steps before it ran."""
    folder = project(tmp_path / "p")
    (folder / "templ" / "decide.j2").write_text("{% include 'part.j2' %}")
    (folder / "templ" / "part.j2").write_text("fine")
    compile_to_build(folder, "templ", openai_server)
    part = folder / "templ" / "part.j2"
    part.write_bytes(broken if isinstance(broken, bytes) else broken.encode())

    ran = twelvefold("run", "build/greet.py", "--input", "ana", cwd=folder, server=openai_server)

    assert ran.returncode == 1
    (line,) = ran.stderr.splitlines()
    assert "prompt template part.j2 in" in line and "cannot render" in line
    assert openai_server.requests == []
    assert not (folder / ".twelvefold" / "threads.db").exists()  # no thread, no store


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        ({"decide.j2": "{% include 'decide.j2' %}"}, "decide.j2 → decide.j2"),
        (
            {"decide.j2": "{% extends 'base.j2' %}", "base.j2": "{% import 'decide.j2' as d %}"},
            "decide.j2 → base.j2 → decide.j2",
        ),
        (
            {"finish.j2": "{% include 'part.j2' %}", "part.j2": "{% include 'part.j2' %}"},
            "part.j2 → part.j2",
        ),
    ],
)
def test_a_template_that_loads_itself_is_refused_before_a_thread_exists(
    tmp_path: Path, openai_server: ScriptedOpenAI, files: dict[str, str], cycle: str
) -> None:
    """Edited after the module was compiled into a cycle of loads: Jinja2 would recurse
    until Python's stack runs out at the step that renders it."""
    folder = project(tmp_path / "p")
    compile_to_build(folder, "templ", openai_server)
    for name, text in files.items():
        (folder / "templ" / name).write_text(text)

    ran = twelvefold("run", "build/greet.py", "--input", "ana", cwd=folder, server=openai_server)

    assert ran.returncode == 1
    (line,) = ran.stderr.splitlines()
    assert f"cannot render (it loads itself: {cycle})" in line
    assert openai_server.requests == []
    assert not (folder / ".twelvefold" / "threads.db").exists()  # no thread, no store


def test_a_module_whose_templates_are_gone_is_refused_before_a_thread_exists(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    folder = project(tmp_path / "p")
    compile_to_build(folder, "templ", openai_server)
    (folder / "templ").rename(folder / "moved")

    ran = twelvefold("run", "build/greet.py", "--input", "ana", cwd=folder, server=openai_server)

    assert ran.returncode == 1
    assert ran.stderr.splitlines() == [
        f"error: {folder / 'build' / 'greet.py'}: prompt templates not found in "
        f"{folder / 'templ'} (decide.j2, finish.j2); pass --prompts DIR, the folder it was "
        "compiled with (or compile it again with `twelvefold compile --prompts DIR`)"
    ]
    assert not (folder / ".twelvefold" / "threads.db").exists()  # no thread, no store
    assert openai_server.requests == []
    served = twelvefold("serve", "build/greet.py", cwd=folder, server=openai_server, model=False)
    assert served.returncode == 1
    assert "prompt templates not found in" in served.stderr.splitlines()[-1]
    # Named where they are now, they are found.
    openai_server.reply_tool({"text": "hi"})
    named = twelvefold(
        "run", "build/greet.py", "--prompts", "moved", "--input", "ana", "--json",
        cwd=folder, server=openai_server,
    )  # fmt: skip
    assert named.returncode == 0, named.stderr
    assert "DECIDE-TEMPLATE for ana" in sent(openai_server.requests[0])


OUTER = """agent outer { input string start draft }
type Draft { text: string }
type Done { message: string }
llm draft -> Draft { prompt "outer.j2" on Draft -> polish }
agent polish(Draft) -> Done = "inner/inner.agent" { next done }
final done(Done)
"""
INNER = """agent inner { input Draft start write }
type Draft { text: string }
type Done { message: string }
llm write -> Done { prompt "inner.j2" on Done -> done }
final done(Done)
"""


def test_prompts_names_the_named_agent_s_folder_not_its_sub_agents(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    """As `check --prompts` reads them: the sub-agent's templates come from its own nearest
    `prompts/`, whatever folder `--prompts` names for the agent run."""
    folder = tmp_path / "p"
    (folder / "templ").mkdir(parents=True)
    (folder / "inner" / "prompts").mkdir(parents=True)
    (folder / "outer.agent").write_text(OUTER)
    (folder / "inner" / "inner.agent").write_text(INNER)
    (folder / "templ" / "outer.j2").write_text("OUTER-TEMPLATE for {{ input }}")
    (folder / "inner" / "prompts" / "inner.j2").write_text("INNER-TEMPLATE")
    checked = twelvefold(
        "check", "outer.agent", "--prompts", "templ", cwd=folder, server=openai_server, model=False
    )
    assert checked.returncode == 0, checked.stderr
    openai_server.reply_tool({"text": "hi"})
    openai_server.reply_tool({"message": "polished"})

    ran = twelvefold(
        "run", "outer.agent", "--prompts", "templ", "--input", "ana", "--json",
        cwd=folder, server=openai_server,
    )  # fmt: skip

    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "finished"
    assert "OUTER-TEMPLATE for ana" in sent(openai_server.requests[0])
    assert "INNER-TEMPLATE" in sent(openai_server.requests[1])
