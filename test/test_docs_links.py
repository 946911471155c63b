"""The repository's Markdown links resolve: every relative link and image of README.md and
docs/ names a file that exists, and every ``#anchor`` names a heading of its target (as
GitHub makes heading anchors). Text moved between the README and docs/ breaks links that
no reader reports; this fails instead."""
from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Inline links and images, ``[text](target)`` / ``![alt](target)``; a target ends at the
#: first space or closing parenthesis (no title strings are used here).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_files() -> list[Path]:
    """The tracked Markdown files (README, docs/, bench/); all of them when git is absent."""
    try:
        out = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, check=True).stdout.split()
        files = [ROOT / p for p in out]
    except (OSError, subprocess.SubprocessError):
        files = [p for p in ROOT.rglob("*.md") if ".venv" not in p.parts]
    return sorted(p for p in files if p.exists())


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text: inline markup and punctuation dropped (letters,
    digits, ``-`` and ``_`` kept), lower case, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)     # links -> their text
    text = text.replace("`", "").replace("*", "").lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (repeated headings get ``-1``, ``-2``)."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    """The relative link targets of a Markdown file (web and mail links left out)."""
    text = "\n".join(_prose_lines(path.read_text(encoding="utf-8")))
    text = re.sub(r"`[^`\n]*`", "", text)                       # code spans hold no links
    # a link's text may run over a line break (the target may not)
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]


def test_slug_follows_github():
    """The anchors GitHub makes for headings like the README's."""
    assert slug("The ROS 2 node: `vl_distill_node`") == "the-ros-2-node-vl_distill_node"
    assert slug("Unseen objects: generalised zero-shot and open set") == \
        "unseen-objects-generalised-zero-shot-and-open-set"
    assert slug("Depth (`--depth`)") == "depth---depth"
    assert slug("Real photos: a first look") == "real-photos-a-first-look"


def test_checker_finds_a_broken_link(tmp_path):
    """The check itself: a missing file and a missing anchor are both found."""
    (tmp_path / "a.md").write_text("# Top\n\n## Part two\n\n[ok](#part-two) [bad](#part-3)\n"
                                   "[file](b.md#top) ![img](missing.png) [over a\nbreak](#gone)\n"
                                   "`[code](x.md)`\n```\n[x](nope.md)\n```\n")
    (tmp_path / "b.md").write_text("# Top\n")
    assert _broken(tmp_path / "a.md") == ["#part-3", "missing.png", "#gone"]


def _broken(path: Path) -> list[str]:
    bad = []
    for target in links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(target)
    return bad


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path):
    """Each relative link names an existing file, and its anchor a heading there."""
    assert _broken(path) == [], f"{path.relative_to(ROOT)}: broken links"
