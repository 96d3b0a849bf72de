"""Every relative link in README.md, CONTRIBUTING.md and docs/*.md resolves: the file it names
exists, and its `#anchor`, if any, is a heading of that file (GitHub's anchors: lowercase, spaces
to '-', punctuation dropped, a repeated heading numbered). Text only, a fraction of a second."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.sweeputil import REPO

DOCS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: markup and punctuation dropped, lowercase, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and '_'
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        if m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line):
            base = anchor(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    text = CODE.sub("", FENCE.sub("", path.read_text()))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # no http:, mailto:


def broken(path: Path) -> list[str]:
    bad = []
    for target in links(path):
        file, _, frag = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif frag and (dest.suffix != ".md" or frag not in anchors(dest)):
            bad.append(f"{target}: no heading #{frag} in {dest.name}")
    return bad


def test_the_anchors_are_githubs():
    assert anchor("A sweep's name is its identity") == "a-sweeps-name-is-its-identity"
    assert anchor("Several levels on one GPU (`executor.pack`)") == "several-levels-on-one-gpu-executorpack"
    assert anchor("JSON output: `status`, `query` and `launch --dry-run`") == (
        "json-output-status-query-and-launch---dry-run"
    )


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n## Two words\n\n[ok](#two-words) [bad](#three) [gone](b.md)\n")
    assert broken(tmp_path / "a.md") == ["#three: no heading #three in a.md", "b.md: no such file"]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves(path):
    assert path.exists()
    assert broken(path) == []
