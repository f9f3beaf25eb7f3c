"""The README and docs/ pages hold together: every relative link and image names a file that
exists, and a link into a page's section names a heading that page has."""

import re
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.docs import doc_headings

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def _anchor(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _relative_links(page: Path) -> list[str]:
    text = CODE.sub("", page.read_text())
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page):
    links = _relative_links(page)
    for link in links:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link} names no file"
        if anchor:
            page_in_repo = str(target.relative_to(REPO))
            anchors = {_anchor(title) for _, _, title in doc_headings(page_in_repo)}
            assert anchor in anchors, f"{page.name}: {link} names no heading of {page_in_repo}"


def test_the_readme_links_every_docs_page():
    """The README's map of the docs names every page in docs/."""
    linked = {(REPO / link.partition("#")[0]).resolve() for link in _relative_links(PAGES[0])}
    assert set(PAGES[1:]) <= linked, set(PAGES[1:]) - linked


def test_a_broken_link_and_anchor_are_found(tmp_path, monkeypatch):
    """The check can fail: a missing file and a missing heading are both caught."""
    page = tmp_path / "PAGE.md"
    page.write_text("# Title\n\n[gone](NOPE.md) [self](#no-such) [ok](#title) `[code](x.md)`\n")
    assert _relative_links(page) == ["NOPE.md", "#no-such", "#title"]
    monkeypatch.setattr("tests.test_docs.REPO", tmp_path)
    monkeypatch.setattr("tests.docs.REPO", tmp_path)
    with pytest.raises(AssertionError, match="NOPE.md names no file"):
        test_every_relative_link_resolves(page)
    page.write_text("# Title\n\n[self](#no-such)\n")
    with pytest.raises(AssertionError, match="#no-such names no heading"):
        test_every_relative_link_resolves(page)
    assert _anchor("Inputs of any shape: resize, letterbox, crop, tile") == (
        "inputs-of-any-shape-resize-letterbox-crop-tile"
    )
