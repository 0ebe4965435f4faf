"""Package layers: no harness package imports a higher layer or forms a cycle with another.

The order is written once, in README.md ("Layers" section, the line after ``<!-- layers -->``); this test reads
it from there. Every import counts -- module level and function-local (a lazy import still couples the packages),
``import x`` and ``from x import y``, absolute and relative. Registry strings (``"baselines.kd:KD"``) are data,
not imports. ``baselines/`` (the baseline distillers) sits in the distill layer.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_ROOTS = ("harness", "baselines")


def layer_order(readme: str) -> list[list[str]]:
    """``a, b → c → d`` (the line after the ``<!-- layers -->`` marker) -> ``[["a", "b"], ["c"], ["d"]]``."""
    lines = readme.splitlines()
    marker = lines.index("<!-- layers -->")
    line = lines[marker + 1].strip().strip("`")
    return [[name.strip() for name in part.split(",") if name.strip()] for part in line.split("→")]


def package_of(module: str) -> str | None:
    """``harness.data.nuscenes`` -> ``data``; ``harness.cli`` -> ``cli``; ``baselines.kd`` -> ``baselines``."""
    parts = module.split(".")
    if parts[0] == "baselines":
        return "baselines"
    if parts[0] != "harness":
        return None
    return parts[1] if len(parts) > 1 else "harness"


def imports_of(path: Path) -> list[tuple[str, int]]:
    """Every imported module name in ``path`` (absolute, with relative imports resolved) and its line."""
    module_parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if module_parts[-1] == "__init__":
        module_parts = module_parts[:-1]
        package = module_parts
    else:
        package = module_parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                out.append((".".join(base + ([node.module] if node.module else [])), node.lineno))
            elif node.module:
                out.append((node.module, node.lineno))
    return out


def package_edges() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> ["file:line", ...] over every .py file of the harness."""
    edges: dict[tuple[str, str], list[str]] = {}
    for root in PACKAGE_ROOTS:
        for path in sorted((ROOT / root).rglob("*.py")):
            src = package_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
            for name, line in imports_of(path):
                dst = package_of(name)
                if dst is not None and dst != src and src is not None:
                    edges.setdefault((src, dst), []).append(f"{path.relative_to(ROOT)}:{line}")
    return edges


def find_cycle(edges) -> list[str] | None:
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_layer_order_parses_and_names_every_package():
    layers = layer_order((ROOT / "README.md").read_text(encoding="utf-8"))
    named = [p for layer in layers for p in layer]
    assert len(named) == len(set(named)), f"a package appears twice in the README layer order: {named}"
    present = {p.name for p in (ROOT / "harness").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    present |= {p.stem for p in (ROOT / "harness").glob("*.py") if p.stem != "__init__"}
    present.add("baselines")
    missing = sorted(present - set(named))
    assert not missing, f"README layer order does not place: {missing} (add them to the line after <!-- layers -->)"


def test_every_harness_folder_is_a_package():
    bare = [p.name for p in (ROOT / "harness").iterdir()
            if p.is_dir() and any(p.glob("*.py")) and not (p / "__init__.py").is_file()]
    assert not bare, f"folders with modules but no __init__.py: {bare}"


def test_no_package_cycle():
    cycle = find_cycle(package_edges())
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or [])


def test_no_lower_layer_imports_a_higher_one():
    layers = layer_order((ROOT / "README.md").read_text(encoding="utf-8"))
    rank = {p: i for i, layer in enumerate(layers) for p in layer}
    wrong = [f"{a} (layer {rank[a]}) imports {b} (layer {rank[b]}) at {', '.join(where[:3])}"
             for (a, b), where in sorted(package_edges().items()) if a in rank and b in rank and rank[a] < rank[b]]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("src,expected", [
    ("import harness.report.tables\n", [("harness.report.tables", 1)]),
    ("def f():\n    from harness.reproduce.plan import Plan\n", [("harness.reproduce.plan", 2)]),
    ("from ..report import tables\n", [("harness.report", 1)]),
    ("from . import plan\n", [("harness.data", 1)]),
])
def test_imports_of_sees_local_and_relative_imports(tmp_path, src, expected, monkeypatch):
    # a file placed at harness/data/x.py relative to a fake root: relative imports resolve against its package
    fake = tmp_path / "harness" / "data"
    fake.mkdir(parents=True)
    (fake / "x.py").write_text(src)
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert imports_of(fake / "x.py") == expected


def test_find_cycle_reports_a_two_package_cycle():
    assert find_cycle({("report", "reproduce"): [], ("reproduce", "report"): [], ("report", "data"): []}) in (
        ["report", "reproduce", "report"], ["reproduce", "report", "reproduce"])
    assert find_cycle({("a", "b"): [], ("b", "c"): []}) is None
