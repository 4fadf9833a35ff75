"""README's links into benchmarks/RESULTS.md land on a heading (GitHub's anchor rule: lower case, punctuation other
than hyphens dropped, spaces to hyphens), so a renamed results section cannot leave a dead link."""

from __future__ import annotations

import re

from benchmarks.report import anchor
from tests.conftest import ROOT


def anchors(markdown: str) -> set[str]:
    return {anchor(m.group(1).strip()) for m in re.finditer(r"^#+ (.*)$", markdown, re.M)}


def test_anchor_rule_by_hand():
    heading = "## CUT vs X: results (2026-11-30 / 12-01, 2 seeds)"
    assert anchors(heading) == {"cut-vs-x-results-2026-11-30--12-01-2-seeds"}


def test_readme_links_into_results_resolve():
    known = anchors((ROOT / "benchmarks/RESULTS.md").read_text())
    links = re.findall(r"benchmarks/RESULTS\.md#([\w\-]+)", (ROOT / "README.md").read_text())
    assert links and [a for a in links if a not in known] == []


def test_results_links_within_itself_resolve():
    text = (ROOT / "benchmarks/RESULTS.md").read_text()
    links = re.findall(r"\]\(#([\w\-]+)\)", text)
    assert links and [a for a in links if a not in anchors(text)] == []
