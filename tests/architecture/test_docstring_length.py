"""Module docstrings stay short: the module, its equations with shapes, and links to ``docs/readings.md``.

Reading discussions (question, choice, source, alternatives, option) belong in ``docs/readings.md`` entries,
not in docstrings. A module docstring under ``harness/`` or ``baselines/`` may have at most
:data:`MAX_DOCSTRING_LINES` lines.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "baselines")
#: at most this many lines per module docstring (the longest today is 30: PVD's two displayed equations)
MAX_DOCSTRING_LINES = 30


def docstring_lines(source: str) -> int:
    """Lines of the module docstring of ``source`` as written (0 without one)."""
    doc = ast.get_docstring(ast.parse(source), clean=False)
    return len(doc.splitlines()) if doc else 0


def long_module_docstrings(root: Path = ROOT, limit: int = MAX_DOCSTRING_LINES) -> list[str]:
    """``path: n lines`` for every module under PACKAGES whose docstring exceeds ``limit`` lines, longest first."""
    sizes = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            n = docstring_lines(path.read_text(encoding="utf-8"))
            if n > limit:
                sizes.append((n, path.relative_to(root).as_posix()))
    return [f"{p}: {n} lines" for n, p in sorted(sizes, key=lambda x: (-x[0], x[1]))]


def test_module_docstrings_stay_short():
    offenders = long_module_docstrings()
    assert not offenders, (f"module docstrings over {MAX_DOCSTRING_LINES} lines; keep the equations and links, "
                           "move reading discussions to docs/readings.md:\n" + "\n".join(offenders))


def test_docstring_lines_counts_the_module_docstring_only():
    source = '"""one\n\ntwo\nthree\n"""\ndef f():\n    """a\n    b\n    c\n    d\n    e\n    """\n'
    assert docstring_lines(source) == 4
    assert docstring_lines("x = 1\n") == 0
    assert docstring_lines("# comment\n'single'\n") == 1


def _module(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_the_check_lists_each_long_docstring(tmp_path):
    """31 and 40 lines under harness/ and baselines/ are listed, longest first; 30 lines, a function's
    docstring and a module outside the packages are not."""
    doc = lambda n: '"""' + "line\n" * n + '"""\n'  # noqa: E731 -- n lines (the last ends before the quotes)
    _module(tmp_path / "harness" / "sub" / "long.py", doc(31))
    _module(tmp_path / "baselines" / "longer.py", doc(40))
    _module(tmp_path / "baselines" / "limit.py", doc(30))
    _module(tmp_path / "harness" / "func.py", "def f():\n    " + doc(50))
    _module(tmp_path / "tests" / "outside.py", doc(50))
    assert long_module_docstrings(tmp_path) == ["baselines/longer.py: 40 lines", "harness/sub/long.py: 31 lines"]
