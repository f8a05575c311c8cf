"""The README is a front page and docs/ a site whose links hold (``make docs`` builds it with mkdocs
--strict in CI; these checks need no mkdocs and run in milliseconds)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text outside code: links written in code blocks and spans are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text()))


def anchor(heading: str) -> str:
    """The id Python-Markdown's toc (mkdocs) gives a heading; GitHub's agrees for these headings."""
    text = re.sub(r"<[^>]+>|`", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def anchors(path: Path) -> set[str]:
    return {anchor(heading) for heading in HEADING.findall(FENCE.sub("", path.read_text()))}


def relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE)  # http:, https:, mailto:


def check_links(path: Path) -> list[str]:
    broken = []
    for target in filter(relative, links(path)):
        file_part, _, fragment = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{target}: no heading #{fragment} in {destination.relative_to(ROOT)}")
    return broken


def nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [page for value in node.values() for page in nav_pages(value)]
    return [page for value in node or [] for page in nav_pages(value)]


def test_the_link_finder_sees_links_and_skips_code():
    text = '[a](x.md) ![img](p.png) `[no](code.md)`\n```\n[no](block.md)\n```\n[b](y.md#z "title")'
    assert LINK.findall(prose(text)) == ["x.md", "p.png", "y.md#z"]
    heading = "Unknown number of clusters: `num_clusters=auto`"
    assert anchor(heading) == "unknown-number-of-clusters-num_clustersauto"
    assert anchor("Self-labelling, several heads, TEMI") == "self-labelling-several-heads-temi"


def test_readme_links_point_into_docs_or_at_repository_files():
    readme = ROOT / "README.md"
    assert check_links(readme) == []
    targets = [t.partition("#")[0] for t in links(readme) if relative(t)]
    assert targets, "the front page links to no docs page"
    for target in targets:
        assert (ROOT / target).resolve().is_relative_to(ROOT), target  # nothing outside the checkout
    assert any(t.startswith("docs/") for t in targets)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_of_a_docs_page_resolves(page):
    assert check_links(page) == []
    for target in filter(relative, links(page)):  # mkdocs only serves files under docs/
        file_part = target.partition("#")[0]
        if file_part:
            assert (page.parent / file_part).resolve().is_relative_to(DOCS), target


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = nav_pages(config["nav"])
    assert sorted(nav) == sorted(p.name for p in PAGES)
    assert len(nav) == len(set(nav))
    assert config["strict"] is True and config["docs_dir"] == "docs"
    assert config["validation"]["links"]["not_found"] == "warn"  # warnings fail a strict build
    assert config["validation"]["links"]["anchors"] == "warn"


def test_the_readme_is_a_front_page_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    assert "make train" in readme and "make test" in readme
    for page in PAGES:  # the front page links to every page of the site
        if page.name != "index.md":
            assert f"docs/{page.name}" in readme, page.name


def test_ci_builds_the_docs():
    assert "\nmake docs\n" in (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^docs: .*\n\t\$\(BIN\)/mkdocs build --strict", (ROOT / "Makefile").read_text(), re.M)
