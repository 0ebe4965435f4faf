#!/usr/bin/env bash
# PVKD reproduction harness entry point.
#   ./reproduce.sh test              run the whole test suite (unit tests + benchmarks)
#   ./reproduce.sh bench             run only the speed benchmarks, with their tables
#   ./reproduce.sh setup --minkowski build (or reuse the cached) MinkowskiEngine wheel and install it into .venv
#   ./reproduce.sh table1 ...        reproduce an experiment: any harness/configs/experiments/<name>.yaml [--profile demo|paper]
#                                    [--seeds N] [--gpus N] [--dry-run]; then `tables` (re-render) and `check`
#   ./reproduce.sh device-check      GPU readiness report (CUDA vs CPU float64, AMP, latency, DDP) -> results/device_check.json
# On a fresh clone it first creates .venv and installs the project with its test extra.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import harness, pytest, pytest_benchmark" 2>/dev/null; then
    echo "[reproduce] setting up .venv (torch==2.13.0 CPU, project + test extra)" >&2
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    # torch first and pinned: an unpinned resolve would pull the multi-GB CUDA build
    .venv/bin/python -m pip install -q "torch==2.13.0"
    .venv/bin/python -m pip install -q -e '.[test]'
fi
PY=.venv/bin/python

# pdflatex lets the tests compile the LaTeX tables (not only check their structure). On Debian/Ubuntu as root,
# `test` installs it when absent (texlive-latex-recommended, no recommends: ~25 s with apt-get update); elsewhere
# the LaTeX test says it checked the structure only.
ensure_pdflatex() {
    command -v pdflatex >/dev/null 2>&1 && return 0
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
        echo "[reproduce] installing texlive-latex-recommended (pdflatex) for the LaTeX table test" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            texlive-latex-recommended) >/dev/null 2>&1 \
            || echo "[reproduce] could not install pdflatex: the LaTeX test will check the structure only" >&2
    fi
}

# CI sets PVKD_REQUIRE_MINKOWSKI=1: MinkowskiEngine is installed (cached wheel, else a 6-50 min source build) so
# that its exactness tests run instead of skipping; tools/build_minkowski.sh says which step failed.
ensure_minkowski() {
    [ "${PVKD_REQUIRE_MINKOWSKI:-0}" = "1" ] || return 0
    "$PY" -c "import MinkowskiEngine" >/dev/null 2>&1 || tools/build_minkowski.sh "$PWD/$PY"
}

cmd=${1:-help}
shift || true
case "$cmd" in
    test)
        ensure_pdflatex
        ensure_minkowski
        # Real-scan tests read $PVKD_REAL_DATA, transcription tests $PVKD_PAPER_TEXTS; both skip visibly without them.
        set +e
        "$PY" -m pytest -q --benchmark-columns=min,median,mean,rounds "$@"
        rc=$?
        set -e
        if [ "$rc" -eq 5 ]; then echo "[reproduce] pytest collected no tests: that is a failure here" >&2; exit 1; fi
        exit "$rc"
        ;;
    bench)
        # speed targets gate only here (tests/benchmarks/conftest.py); `test` records the figures
        PVKD_BENCH_GATE=1 exec "$PY" -m pytest -q tests/benchmarks --benchmark-only "$@"
        ;;
    tables|check)
        exec "$PY" -m harness "$cmd" "$@"
        ;;
    setup)
        [ "${1:-}" = "--minkowski" ] || { echo "usage: ./reproduce.sh setup --minkowski" >&2; exit 2; }
        exec tools/build_minkowski.sh "$PWD/$PY"
        ;;
    help|-h|--help)
        sed -n '2,9p' "$0"
        ;;
    *)
        # any experiment file's name (harness/configs/experiments/<name>.yaml): plan -> train (resumable, skips
        # finished runs) -> tables + figures; see `harness reproduce --help`. Anything else is a harness command.
        if [ -f "harness/configs/experiments/$cmd.yaml" ]; then
            exec "$PY" -m harness reproduce "$cmd" "$@"
        fi
        exec "$PY" -m harness "$cmd" "$@"
        ;;
esac
