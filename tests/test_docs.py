"""The documentation's relative links resolve, and the README stays short.

Every Markdown file checked (README.md and docs/*.md) is scanned for inline links and images,
``[text](target)`` and ``![alt](target)``, outside fenced code blocks and inline code. A relative target
must name an existing file or folder; a ``#anchor`` into a Markdown file (or within the same file) must
match one of its headings, slugged as GitHub slugs them.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250

LINK = re.compile(r"!?\[(?P<text>(?:[^\[\]]|\[[^\[\]]*\])*)\]\((?P<target>[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)"
                  r"(?:\s+\"[^\"]*\")?\)")
"""An inline link or image; the target may hold one level of balanced parentheses."""
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(?P<title>.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
"""http:, https:, mailto:, ...: not checked (no network in tests)."""


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _prose_lines(text: str, *, keep_code: bool = False) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks; inline code blanked out unless
    ``keep_code`` (a heading's code is part of its slug)."""
    out, fenced, fence = [], False, ""
    for number, line in enumerate(text.splitlines(), start=1):
        m = FENCE.match(line)
        if m and (not fenced or m.group(1) == fence):
            fenced, fence = not fenced, m.group(1)
            continue
        if not fenced:
            out.append((number, line if keep_code else INLINE_CODE.sub(lambda c: " " * len(c.group(0)), line)))
    return out


def extract_links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link and image of a Markdown text."""
    return [(number, m.group("target")) for number, line in _prose_lines(text) for m in LINK.finditer(line)]


def github_slug(title: str) -> str:
    """The anchor GitHub gives a heading: its text (no markup), lower-cased, punctuation dropped,
    spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link's text stays, its target goes
    text = re.sub(r"<[^>]+>", "", text)                       # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)                      # \w: Unicode letters, digits and _
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a Markdown text; a repeated slug gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(text, keep_code=True):
        m = HEADING.match(line)
        if not m:
            continue
        slug = github_slug(m.group("title"))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Every relative link of one Markdown file that does not resolve, as 'file:line: target (why)'."""
    text = path.read_text(encoding="utf-8")
    problems = []
    for number, target in extract_links(text):
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not target or EXTERNAL.match(target) or target.startswith("//"):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if file_part.startswith("/"):
            problems.append(f"{where} (an absolute path: use a relative one)")
            continue
        if not dest.exists():
            problems.append(f"{where} (no such file)")
            continue
        if anchor and dest.suffix.lower() == ".md":
            if unquote(anchor).lower() not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{where} (no heading #{anchor} in {dest.name})")
    return problems


# -- the documentation --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert path.exists()
    assert broken_links(path) == []


def test_the_docs_have_links_to_check() -> None:
    """A parser that found nothing would pass every file: the README links into docs/."""
    targets = [t for _, t in extract_links((ROOT / "README.md").read_text(encoding="utf-8"))]
    assert any(t.startswith("docs/") for t in targets)
    assert any("#" in t for t in targets)


def test_readme_is_at_most_250_lines() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: at most {README_MAX_LINES}"


def test_docs_index_lists_every_page() -> None:
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    linked = {t.partition("#")[0] for _, t in extract_links(index)}
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"README.md"}
    assert pages <= linked, f"docs/README.md does not link {sorted(pages - linked)}"


# -- the checker itself -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("title", "slug"), [
    ("Quick start", "quick-start"),
    ("`cvae train`: the lab's `Trainer.py`, flags and all", "cvae-train-the-labs-trainerpy-flags-and-all"),
    ("Shipped specs (`sweeps/configs/`)", "shipped-specs-sweepsconfigs"),
    ("W&B", "wb"),
    ("3. Several machines over SSH", "3-several-machines-over-ssh"),
    ("`trial.json`", "trialjson"),
    ("Already-hyphenated_name", "already-hyphenated_name"),
])
def test_github_slug(title: str, slug: str) -> None:
    assert github_slug(title) == slug


def test_repeated_headings_get_numbered_anchors() -> None:
    assert anchors("# A\n## Setup\n## Setup\n```\n# not a heading\n```\n") == {"a", "setup", "setup-1"}


@pytest.mark.parametrize(("markdown", "targets"), [
    ("see [the spec](docs/spec.md) and ![fig](figures/a.png)", ["docs/spec.md", "figures/a.png"]),
    ("[a](x.md#keys) [b](#local) [c](https://example.org)", ["x.md#keys", "#local", "https://example.org"]),
    ('[titled](x.md "a title")', ["x.md"]),
    ("[`code` in text](x.md)", ["x.md"]),
    ("`[not a link](nope.md)` in code", []),
    ("```\n[not a link](nope.md)\n```\n[after](yes.md)", ["yes.md"]),
    ("[a [nested] text](x.md)", ["x.md"]),
    ("[parens](x_(y).md)", ["x_(y).md"]),
])
def test_extract_links(markdown: str, targets: list[str]) -> None:
    assert [t for _, t in extract_links(markdown)] == targets


@pytest.mark.parametrize(("markdown", "broken"), [
    ("[ok](other.md) [ok](other.md#a-heading) [ok](#here) [ok](sub/) ![ok](sub/pic.png)", []),
    ("[web](https://example.org/missing.md)", []),
    ("[missing](nope.md)", ["nope.md (no such file)"]),
    ("![missing image](sub/nope.png)", ["sub/nope.png (no such file)"]),
    ("[bad anchor](other.md#no-such-heading)", ["other.md#no-such-heading (no heading #no-such-heading in other.md)"]),
    ("[bad local anchor](#nowhere)", ["#nowhere (no heading #nowhere in page.md)"]),
    ("[absolute](/etc/passwd)", ["/etc/passwd (an absolute path: use a relative one)"]),
])
def test_broken_links_are_found(tmp_path: Path, markdown: str, broken: list[str]) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pic.png").write_bytes(b"")
    (tmp_path / "other.md").write_text("# Other\n\n## A heading\n")
    page = tmp_path / "page.md"
    page.write_text(f"# Page\n\n## Here\n\n{markdown}\n")
    found = broken_links(page, root=tmp_path)
    assert [p.split(": ", 1)[1] for p in found] == broken
    assert all(p.startswith("page.md:5: ") for p in found)
