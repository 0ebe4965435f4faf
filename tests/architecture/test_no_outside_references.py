"""Nothing in the repository cites the design specs or paper texts that live outside it.

Code, docs, configs and the reference registry cite the paper, its section, table and row, or an entry of
``docs/readings.md``; fixture locations are settings (``$PVKD_REAL_DATA``, ``$PVKD_PAPER_TEXTS``), never paths.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".csv", ".sh", ".toml", ".txt", ".cfg", ".ini"}
OUTSIDE = re.compile(
    r"\.\./shared\b"                            # the sibling folder holding specs, papers and fixtures
    r"|/shared/(?:specs|papers|data)\b"
    r"|\bspecs?/[\w-]+\.md"                      # a design-spec file
    r"|[Ss]pec(?:'s)? ?§|§ ?\d+(?:\.\d+)+"       # spec sections (§1.2.3)
    r"|\bspec(?:'s)? (?:A|M)\d+\b|\[[RDV/]+[,;] ?A\d+\]" # the specs' ambiguity tags (A<n>, M<n>)
    r"|\b(?:datasets-eval|backbones-backends|methods-pvd-m2skd|baselines-kd)\b"
)


def repository_files() -> list[Path]:
    """Tracked and new (not ignored) files: what a clone would hold."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return [ROOT / f for f in out if f and Path(f).suffix in SUFFIXES and (ROOT / f).is_file()]


def offending_lines(text: str) -> list[tuple[int, str]]:
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]


def test_no_file_cites_outside_specs_or_paper_texts():
    me = Path(__file__).resolve()
    hits = []
    for path in repository_files():
        if path.resolve() == me:
            continue
        for i, line in offending_lines(path.read_text(encoding="utf-8", errors="replace")):
            hits.append(f"{path.relative_to(ROOT)}:{i}: {line[:120]}")
    assert not hits, "cite the paper (section, table, row) or docs/readings.md instead:\n" + "\n".join(hits)


@pytest.mark.parametrize("line", [
    "design reference ``../shared/specs/methods-pvd-m2skd.md`` §1",
    "(datasets-eval spec §4.1)",
    "temperature tau = 1 [D, A3]",
    "source,../shared/papers/pvkd-supplement.txt,12",
    "the spec's A6",
])
def test_the_pattern_catches_each_kind_of_outside_reference(line):
    assert offending_lines(line)


@pytest.mark.parametrize("line", [
    "PVKD supplementary material, Table 4 (Cylinder3D row)",
    "[R, docs/readings.md#pvd-n-minor]",
    "PVKD supplement Sec. 3 (MACs calculation); Hinton et al. 2015, Sec. 2",
    "reads $PVKD_REAL_DATA (skipped without it)",
])
def test_paper_citations_and_reading_links_pass(line):
    assert not offending_lines(line)


def test_every_reading_link_names_an_entry():
    """``docs/readings.md#<anchor>`` (and the ``#<anchor>`` continuations after it) must be ``### <anchor>`` entries."""
    entries = set(re.findall(r"(?m)^### ([\w-]+)$", (ROOT / "docs" / "readings.md").read_text(encoding="utf-8")))
    assert len(entries) >= 20
    missing = []
    for path in repository_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"docs/readings\.md((?:#[\w-]+(?:,\s*)?)+)", text):
            for anchor in re.findall(r"#([\w-]+)", m.group(1)):
                if anchor not in entries:
                    missing.append(f"{path.relative_to(ROOT)}: #{anchor}")
        for m in re.finditer(r"docs/readings\.md#[\w-]+((?:,\s*#[\w-]+)+)", text):
            missing += [f"{path.relative_to(ROOT)}: #{a}" for a in re.findall(r"#([\w-]+)", m.group(1)) if a not in entries]
    assert not missing, missing


def test_readme_indexes_every_reading_with_its_source():
    """The README's readings index lists every docs/readings.md entry, and every entry names its source."""
    doc = (ROOT / "docs" / "readings.md").read_text(encoding="utf-8")
    entries = re.findall(r"(?m)^### ([\w-]+)$", doc)
    blocks = re.split(r"(?m)^### ", doc)[1:]
    assert [b.split("\n", 1)[0] for b in blocks] == entries
    without_source = [b.split("\n", 1)[0] for b in blocks if "**Source" not in b.split("\n## ", 1)[0]]
    assert not without_source, f"readings without a **Source** line: {without_source}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    index = readme.split("<!-- readings-index -->", 1)[1].split("<!-- /readings-index -->", 1)[0]
    listed = re.findall(r"\(docs/readings\.md#([\w-]+)\)", index)
    assert listed == entries, sorted(set(entries) ^ set(listed))
