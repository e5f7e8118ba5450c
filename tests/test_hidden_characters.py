"""Every character a person cannot see, or that changes how the text around it reads, is
shown as its `\\uXXXX` escape wherever a person reads a value (a red team, rt14).

The inbox, Slack, the terminal and the log escaped controls and bidi overrides, but tag
characters (U+E0041 carries a hidden "A"), Hangul fillers, the braille blank, the
combining grapheme joiner and variation selectors passed raw, and so did the zero width
space on a terminal: a tag `"v1.2.3\\U000e0041"` read "v1.2.3" in the inbox while it was
not that tag. runtime/terminal.py's `HIDDEN` is the one definition of them; each test
below sends every character of `DISGUISES` through one boundary as a person sees it.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import unicodedata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import DEPLOY_CASSETTE, EXAMPLES, write_cassette
from tests.support.inbox import signed_in
from tests.support.openai_server import Reply, ScriptedOpenAI
from tests.support.server import deploy_choice, served
from twelvefold.cli import cli
from twelvefold.commands.output import EscapingFormatter
from twelvefold.compiler.render.text import drawable
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.cassette import CassettePlayer
from twelvefold.runtime.notify import EmailNotifier, LogNotifier, Notice
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.terminal import for_terminal, one_line, visible
from twelvefold.runtime.types import Rejected
from twelvefold.server.service import Caller
from twelvefold.server.slack import decided_line, request_message, settled_text

DISGUISES = {
    "TAG LATIN CAPITAL LETTER A": "\U000e0041",
    "LANGUAGE TAG": "\U000e0001",
    "CANCEL TAG": "\U000e007f",
    "HANGUL FILLER": "\u3164",
    "HANGUL CHOSEONG FILLER": "\u115f",
    "HANGUL JUNGSEONG FILLER": "\u1160",
    "HALFWIDTH HANGUL FILLER": "\uffa0",
    "BRAILLE PATTERN BLANK": "\u2800",
    "COMBINING GRAPHEME JOINER": "\u034f",
    "VARIATION SELECTOR-1": "\ufe00",
    "VARIATION SELECTOR-16": "\ufe0f",
    "VARIATION SELECTOR-17": "\U000e0100",
    "VARIATION SELECTOR-256": "\U000e01ef",
    "ZERO WIDTH SPACE": "\u200b",
    "RIGHT-TO-LEFT OVERRIDE": "\u202e",
}
"""The characters the red team got past every boundary (and the override that was
already escaped, to keep it so), by name."""

TAG = "v1.2.3" + "".join(DISGUISES.values())
"""A deploy tag that reads "v1.2.3" (or, with the override, "3.2.1v") when shown raw."""


def escape(char: str) -> str:
    """`char` as JSON writes it, `\\uXXXX` or a surrogate pair (`\\udb40\\udc41`): what a
    person must read in its place."""
    return json.dumps(char)[1:-1]


def assert_shown_escaped(text: str) -> None:
    """No character of DISGUISES is in `text` raw, and each is there as its escape."""
    for name, char in DISGUISES.items():
        assert char not in text, f"{name} (U+{ord(char):04X}) is shown raw"
        assert escape(char) in text, f"{name} (U+{ord(char):04X}) is not shown as an escape"


# ---- the definition ----------------------------------------------------------------------

ORDINARY = (
    "plain ASCII, Grüße, Ελληνικά, русский, 日本語のテキスト, 한국어 ㄱㅏ, مرحبا, שלום, नमस्ते, "
    "ไทย, ᄀ, café (combining: cafe\u0301), 😀 👍🏽 🇫🇷, no\u00a0break, wide\u3000space, tab\there"
)
"""Letters of many scripts, marks drawn over the letter before them, emoji (a skin tone
modifier, a flag: no variation selector), and spaces: text that must stay as it is."""


def test_ordinary_text_is_left_as_it_is_at_every_boundary() -> None:
    for escaper in (for_terminal, visible, drawable):
        assert escaper(ORDINARY) == ORDINARY, escaper
    assert one_line(ORDINARY) == ORDINARY.replace("\t", "\\t")


def test_each_disguise_is_escaped_by_every_escaper_as_json_writes_it() -> None:
    for escaper in (for_terminal, visible, drawable, one_line):
        for name, char in DISGUISES.items():
            assert escaper(f"a{char}b") == f"a{escape(char)}b", (escaper, name)
    # U+E0041 is written as its surrogate pair: `\ue0041` would read as U+E004 and "1".
    assert visible("\U000e0041") == "\\udb40\\udc41"


def test_every_character_of_the_hidden_categories_is_escaped() -> None:
    """The categories UAX #44 names (controls, format, surrogates, private use, line and
    paragraph separators) as the Python running the tests reads Unicode: a Python with
    a newer Unicode that adds a format character fails here until HIDDEN has it."""
    categories = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}
    kept = {"\t", "\n", "\r"}  # laid out by a page; `for_terminal` keeps `\t` and `\n`
    every = "".join(
        chr(code)
        for code in range(0x110000)
        if unicodedata.category(chr(code)) in categories and chr(code) not in kept
    )
    assert not set(visible(every)) & set(every)
    assert not set(for_terminal(every + "\r")) & set(every + "\r")


def test_default_ignorable_code_points_and_blanks_are_escaped() -> None:
    """Default_Ignorable_Code_Point (DerivedCoreProperties.txt) is not in Python's
    `unicodedata`: the first and the last of each of its ranges, and the blanks."""
    ignorable = [
        (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
        (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
        (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
        (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
        (0xE0000, 0xE0FFF),
    ]  # fmt: skip
    for first, last in ignorable:
        for code in (first, last):
            assert visible(chr(code)) == escape(chr(code)), f"U+{code:04X}"
    assert visible("\u2800") == "\\u2800"


# ---- each boundary -----------------------------------------------------------------------


def test_show_prints_each_disguise_escaped_and_show_json_keeps_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_LOG", "0")
    entries = [dict(entry) for entry in DEPLOY_CASSETTE]
    entries[1] = {**entries[1], "output": {"tag": TAG, "env": "production"}}
    cassette = write_cassette(tmp_path / "deploy.jsonl", entries)
    rt = Runtime(SqliteStore(tmp_path / "t.db"), model=CassettePlayer(cassette))
    try:
        view = rt.launch(EXAMPLES / "deploybot.agent", "deploy v1.2.3")
    finally:
        rt.close()
    db = str(tmp_path / "t.db")

    shown = CliRunner().invoke(cli, ["show", view.id, "--db", db])
    assert shown.exit_code == 0, shown.output
    assert_shown_escaped(shown.stdout)
    # The escapes are JSON's, so `--json` decodes to the very value stored.
    as_json = CliRunner().invoke(cli, ["show", view.id, "--db", db, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert_shown_escaped(as_json.stdout)
    assert TAG in json.dumps(json.loads(as_json.stdout), ensure_ascii=False)


def test_a_server_log_line_shows_each_disguise_escaped() -> None:
    """The formatter `serve` and `worker` log through, and the log notifier's notice."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter("%(levelname)s: %(name)s: %(message)s"))
    logger = logging.getLogger("twelvefold.test.hidden")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("replies: %s answered %s", "https://receiver.example", TAG)
    finally:
        logger.removeHandler(handler)
    assert_shown_escaped(stream.getvalue())

    notices = io.StringIO()
    notice = Notice("t-1", "deploybot", "approve_deploy", "approval", f"Deploy {TAG}?",
                    {"tag": TAG}, approvers=(f"ana{TAG}",), request="r-1")  # fmt: skip
    asyncio.run(LogNotifier(notices).notify(notice))
    assert_shown_escaped(notices.getvalue())


def test_every_text_slack_is_sent_shows_each_disguise_escaped() -> None:
    notice = Notice("t-1", "deploybot", "approve_deploy", "approval", f"Deploy {TAG}?",
                    {"tag": TAG}, approvers=(f"ana{TAG}",), request="r-1")  # fmt: skip
    message = request_message(notice)
    header = message["blocks"][0]["text"]["text"]
    section = message["blocks"][1]["text"]["text"]
    approvers = message["blocks"][2]["elements"][0]["text"]
    settled = SimpleNamespace(id="t-1", agent="deploybot", status="finished",
                              output={"tag": TAG}, error=None)  # fmt: skip
    decided = Rejected(step="approve_deploy", request="r-1", comment=f"no {TAG}", by="ana")
    for text in (
        message["text"], header, section, approvers,
        settled_text(settled),  # type: ignore[arg-type]
        decided_line(decided, "r-1"),
    ):  # fmt: skip
        assert_shown_escaped(text)


def test_a_notice_by_email_shows_each_disguise_escaped() -> None:
    notice = Notice("t-1", "deploybot", "approve_deploy", "approval", f"Deploy {TAG}?",
                    {"tag": TAG}, approvers=(f"ana{TAG}",), request="r-1")  # fmt: skip
    email = EmailNotifier("127.0.0.1", 25, "twelvefold@example.com", ["ana@example.com"])
    message = email.message(notice)
    body = message.get_content()
    assert_shown_escaped(body)
    assert body.startswith("Deploy v1.2.3" + escape(TAG.removeprefix("v1.2.3")) + "?\n")


@pytest.mark.anyio
@pytest.mark.usefixtures("collected")
async def test_the_inbox_page_shows_each_disguise_escaped(
    deploy_agent: Path, tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    def responder(body: dict[str, Any]) -> Reply:
        context = "\n".join(
            str(m.get("content", "")) for m in body.get("messages", []) if m.get("role") == "user"
        )
        choice = deploy_choice(context)
        if choice["type"] == "DeployBackend":
            choice["tag"] = TAG
        return Reply(arguments={"choice": choice})

    openai_server.responder = responder
    async with served(deploy_agent, tmp_path / "threads.db", openai_server) as s:
        bob = Caller("bob", "http")
        launched = await s.service.launch(bob, "deploybot", "deploy to prod")
        view = await s.service.wait(bob, launched.id, 60)
        assert view.status == "waiting", view
        async with signed_in(s, "ana") as browser:
            pages = [(await browser.get("/")).text,
                     (await browser.get(f"/threads/{view.id}")).text]  # fmt: skip
    for page in pages:
        assert_shown_escaped(page)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
