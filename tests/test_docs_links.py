"""Every relative link in README.md and docs/*.md leads somewhere: the file exists and,
when the link names an anchor (`file.md#a-heading`, `#a-heading`), the file has that
heading. A reference in words, `(runtime.md, "Forks")`, names a heading of that page (or
the start of one) or a paragraph's bold title (`**Rate limits**`).

Anchors are computed as GitHub computes them: the heading's text lowercased, every
character but letters, digits, `_`, `-` and spaces dropped, spaces turned into hyphens,
and `-1`, `-2`… added to a repeated one. Links inside code (fenced blocks, `inline`) are
not links and are skipped.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
QUOTED = re.compile(r"""\b((?:docs/)?[\w-]+\.md),? "([^"]+)\"""")
BOLD = re.compile(r"\*\*([^*]+?)\.?\*\*")
HTML_ANCHOR = re.compile(r"""<a\s+(?:id|name)=["']([^"']+)["']""")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The page's lines outside fenced code blocks, numbered from 1."""
    lines, fenced = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        fence = FENCE.match(line)
        if fence:
            if fenced is None:
                fenced = fence[1]
            elif fence[1] == fenced:
                fenced = None
            continue
        if fenced is None:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: Counter[str] = Counter()
    for _, line in prose_lines(page.read_text(encoding="utf-8")):
        found.update(HTML_ANCHOR.findall(line))
        heading = HEADING.match(line)
        if heading:
            base = slug(heading[2])
            found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
            seen[base] += 1
    return found


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def dead_links(page: Path) -> list[str]:
    """`page:line: target (why)` for each relative link that leads nowhere."""
    dead = []
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                continue  # https:, mailto:: not a file of this repository
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            where = f"{shown(page)}:{number}: {target}"
            if not linked.exists():
                dead.append(f"{where} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                dead.append(f"{where} (no heading `#{anchor}` in {shown(linked)})")
    return dead


def titles(page: Path) -> list[str]:
    """A page's headings and bold paragraph titles, as written."""
    found = []
    for _, line in prose_lines(page.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        if heading:
            found.append(heading[2])
        found.extend(BOLD.findall(line))
    return found


def dead_references(page: Path) -> list[str]:
    """`page:line: file.md "Title" (why)` for each reference in words that names no
    heading or bold title of that page."""
    dead = []
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        for name, title in QUOTED.findall(INLINE_CODE.sub("", line)):
            linked = ROOT / "docs" / Path(name).name if name != "README.md" else ROOT / name
            where = f'{shown(page)}:{number}: {name}, "{title}"'
            if not linked.exists():
                dead.append(f"{where} (no such file)")
            elif not any(slug(t).startswith(slug(title)) for t in titles(linked)):
                dead.append(f"{where} (no such heading or bold title in {shown(linked)})")
    return dead


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_leads_to_a_file_and_heading(page: Path) -> None:
    assert dead_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_reference_in_words_names_a_heading(page: Path) -> None:
    assert dead_references(page) == []


def test_anchors_follow_githubs_rules(tmp_path: Path) -> None:
    assert slug("E118: a standard-library module as a tool or a validator") == (
        "e118-a-standard-library-module-as-a-tool-or-a-validator"
    )
    assert slug("`twelvefold serve` and `--store`") == "twelvefold-serve-and---store"
    assert slug("On PostgreSQL: workers run the threads") == "on-postgresql-workers-run-the-threads"
    page = tmp_path / "page.md"
    page.write_text(
        "# Notes\n\n## Forks\n\n## Forks\n\n```\n## Not a heading\n```\n\n"
        "[a](#forks-1) [b](#not-a-heading) `[c](#in-code)` [d](missing.md) [e](#notes)\n"
    )
    assert anchors(page) == {"notes", "forks", "forks-1"}
    found = dead_links(page)
    assert len(found) == 2
    assert "#not-a-heading (no heading" in found[0] and "missing.md (no such file)" in found[1]


def test_references_in_words_are_checked(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        'See (runtime.md, "Forks"), (deploy.md, "Rate limits"), (runtime.md, "Model failures")'
        ' and (nowhere.md, "X").\n'
    )
    found = dead_references(page)
    assert [f.split(": ", 1)[1].split(" (")[0] for f in found] == [
        'runtime.md, "Model failures"',
        'nowhere.md, "X"',
    ]
