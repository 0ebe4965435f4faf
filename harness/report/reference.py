"""The reported numbers (``results/reference/pvkd_reported.csv``) and the paper's ordering claims
(``results/reference/claims.yaml``).

CSV columns (one row per number; nothing in it is computed):

``ref``         row id shared by the metrics of one table row (``t1.spvcnn.kd``); experiments point at it
``metric``      ``miou`` | ``macs_g`` | ``coef.<term>`` | ``iou.<class>`` | ``miou_reproduced``
``value``       the number exactly as printed; ``unit``: ``%``, ``GMACs`` or ``coefficient``
``table``, ``row``, ``column``  where it is printed (table name, row label, column header as in the source)
``method``, ``backbone``, ``width``, ``dataset``, ``split``  what it measures
``source``, ``line``  the publication or page (``PVKD supplementary material``, ``Codes-for-PVKD README``...) and,
                for the PVKD texts, the 1-based line of its text copy (``$PVKD_PAPER_TEXTS``, read by the tests)
``confidence``  ``verified`` (primary source: the supplement, the paper's abstract page or the authors' README,
                spec tag [V]) or ``corroborated`` (third-party copies of the paper's table, spec tag [C])
``note``        provenance details
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = REPO_ROOT / "results" / "reference"
REFERENCE_CSV = "pvkd_reported.csv"
CLAIMS_YAML = "claims.yaml"
COLUMNS = ("ref", "metric", "value", "unit", "table", "row", "column", "method", "backbone", "width", "dataset", "split",
           "source", "line", "confidence", "note")
CONFIDENCE = ("verified", "corroborated")


@dataclass(frozen=True)
class Reported:
    ref: str
    metric: str
    value: float
    text: str             # the value as printed
    row: dict[str, str]


class Reference:
    """Lookup ``(ref, metric) -> Reported``."""

    def __init__(self, rows: list[dict[str, str]], path: Path | None = None) -> None:
        self.rows = rows
        self.path = path
        self._by_key: dict[tuple[str, str], Reported] = {}
        for i, row in enumerate(rows):
            key = (row["ref"], row["metric"])
            if key in self._by_key:
                raise InputError(path or REFERENCE_CSV, f"line {i + 2}: duplicate (ref, metric) {key}", "keep one row per number")
            try:
                value = float(row["value"])
            except ValueError:
                raise InputError(path or REFERENCE_CSV, f"line {i + 2}: value {row['value']!r} is not a number", "fix it") from None
            if row["confidence"] not in CONFIDENCE:
                raise InputError(path or REFERENCE_CSV, f"line {i + 2}: confidence {row['confidence']!r}", f"use one of {CONFIDENCE}")
            self._by_key[key] = Reported(row["ref"], row["metric"], value, row["value"], row)

    def get(self, ref: str | None, metric: str = "miou") -> Reported | None:
        if not ref:
            return None
        return self._by_key.get((ref, metric))

    def value(self, ref: str | None, metric: str = "miou") -> float | None:
        item = self.get(ref, metric)
        return None if item is None else item.value

    def metrics(self, ref: str, prefix: str = "") -> dict[str, Reported]:
        return {m: r for (rf, m), r in self._by_key.items() if rf == ref and m.startswith(prefix)}

    def refs(self) -> set[str]:
        return {r for r, _ in self._by_key}

    def source_of(self, ref: str, metric: str = "miou") -> str:
        item = self.get(ref, metric)
        if item is None:
            return ""
        row = item.row
        return f"{row['source']} ({row['table']}, row {row['row']})"


def load_reference(directory: str | Path | None = None) -> Reference:
    path = Path(directory or REFERENCE_DIR) / REFERENCE_CSV
    if not path.is_file():
        raise InputError(path, "reference numbers not found", "run from the repository root (results/reference/)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise InputError(path, f"columns {reader.fieldnames}", f"expected {list(COLUMNS)}")
        rows = list(reader)
    return Reference(rows, path)


def load_claims(directory: str | Path | None = None) -> list[dict[str, Any]]:
    path = Path(directory or REFERENCE_DIR) / CLAIMS_YAML
    if not path.is_file():
        return []
    data = yaml.safe_load(path.read_text()) or {}
    claims = data.get("claims") or []
    for c in claims:
        for key in ("id", "table", "kind", "subject", "severity", "text", "source"):
            if key not in c:
                raise InputError(path, f"claim {c.get('id', '?')} lacks {key!r}", "complete the claim")
        if c["kind"] not in ("ge_all", "within"):
            raise InputError(path, f"claim {c['id']}: kind {c['kind']!r}", "use ge_all or within")
        if c["severity"] not in ("error", "warn"):
            raise InputError(path, f"claim {c['id']}: severity {c['severity']!r}", "use error or warn")
    return claims
