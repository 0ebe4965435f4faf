#!/usr/bin/env bash
# Build (or reuse) a CPU-only MinkowskiEngine wheel from its PyPI sdist and install it into a venv.
#
#   tools/build_minkowski.sh [PYTHON]        PYTHON defaults to .venv/bin/python (must already have torch)
#
# Environment:
#   PVKD_WHEEL_CACHE   wheel cache root (default ${XDG_CACHE_HOME:-~/.cache}/pvkd-harness/wheels); the wheel lives in
#                      <root>/me<ME>-torch<TORCH>-py<X.Y>-cpu/, so a torch or Python upgrade rebuilds it
#   MAX_JOBS           compiler jobs (default: number of cores)
#   PVKD_ME_NO_INSTALL=1  build/cache the wheel only
#
# Steps (each names itself when it fails, exit 2):
#   1. toolchain: g++ and OpenBLAS headers (Debian: build-essential, libopenblas-dev; installed with apt-get when
#      running as root, otherwise the script says what to install)
#   2. `pip download` the sdist (MinkowskiEngine 0.5.4) into a scratch folder
#   3. patch (the only source change): Python >= 3.10 removed the ABC aliases from `collections`, so five modules'
#      `from collections import Sequence` becomes `from collections.abc import Sequence`; and setup.py's import-time
#      `rm -rf build` / `pip uninstall MinkowskiEngine -y` lines are dropped (they would remove an installed copy)
#   4. `python setup.py bdist_wheel --cpu_only --blas=openblas` in the scratch copy (~6 min on 2 idle cores, 48 min measured under heavy load)
#   5. import check of the built wheel, cache it, `pip install --no-deps` it
set -euo pipefail

ME_VERSION=0.5.4
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${1:-$ROOT/.venv/bin/python}"

fail() { echo "[build_minkowski] FAILED at step '$1': $2" >&2; exit 2; }
say() { echo "[build_minkowski] $*" >&2; }

[ -x "$PY" ] || fail "python" "no python at $PY (run ./reproduce.sh once to create .venv, or pass a python)"
TORCH_VERSION=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null) \
    || fail "python" "$PY cannot import torch (the sdist's setup.py needs torch installed first)"
PY_VERSION=$("$PY" -c "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')")
KEY="me${ME_VERSION}-torch${TORCH_VERSION}-py${PY_VERSION}-cpu"
CACHE_ROOT="${PVKD_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pvkd-harness/wheels}"
CACHE_DIR="$CACHE_ROOT/$KEY"
WHEEL=$(ls "$CACHE_DIR"/minkowskiengine-"$ME_VERSION"-*.whl 2>/dev/null | head -n1 || true)

if [ -z "$WHEEL" ]; then
    say "no cached wheel in $CACHE_DIR: building MinkowskiEngine $ME_VERSION from the PyPI sdist"
    # 1. toolchain
    need_apt=()
    command -v g++ >/dev/null 2>&1 || need_apt+=(build-essential)
    # setup.py --blas=openblas links -lopenblas: the unversioned dev library must exist
    have_openblas=0
    for lib in /usr/lib/libopenblas.so /usr/lib/*/libopenblas.so /usr/lib64/libopenblas.so; do
        [ -e "$lib" ] && have_openblas=1
    done
    [ "$have_openblas" = 1 ] || need_apt+=(libopenblas-dev)
    if [ ${#need_apt[@]} -gt 0 ]; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
            say "installing ${need_apt[*]} with apt-get"
            (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}") \
                >/dev/null 2>&1 || fail "toolchain" "apt-get install ${need_apt[*]} failed"
        else
            fail "toolchain" "missing ${need_apt[*]}: install them (Debian/Ubuntu: apt-get install ${need_apt[*]}) and rerun"
        fi
    fi
    command -v g++ >/dev/null 2>&1 || fail "toolchain" "no g++ after installing build-essential"

    SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/pvkd-me-build.XXXXXX")
    trap 'rm -rf "$SCRATCH"' EXIT
    # setup.py shells out to `pip uninstall MinkowskiEngine -y` on import, also while pip reads the sdist's
    # metadata: a no-op `pip` first on PATH keeps it from removing an installed copy
    mkdir -p "$SCRATCH/shim"
    printf '#!/bin/sh\nexit 0\n' >"$SCRATCH/shim/pip"
    chmod +x "$SCRATCH/shim/pip"

    # 2. download (setup.py imports torch and numpy: no build isolation; stdlib distutils for numpy.distutils users)
    say "downloading the MinkowskiEngine==$ME_VERSION sdist"
    (cd "$SCRATCH" && PATH="$SCRATCH/shim:$PATH" SETUPTOOLS_USE_DISTUTILS=stdlib "$PY" -m pip download -q --no-deps \
        --no-build-isolation --no-binary :all: "minkowskiengine==$ME_VERSION" -d dl) \
        || fail "download" "pip download minkowskiengine==$ME_VERSION failed (is PyPI reachable?)"
    tar -xzf "$SCRATCH"/dl/[Mm]inkowski[Ee]ngine-"$ME_VERSION".tar.gz -C "$SCRATCH" || fail "download" "cannot unpack the sdist"
    SRC="$SCRATCH/MinkowskiEngine-$ME_VERSION"

    # 3. patch
    PATCHED=(MinkowskiCommon.py MinkowskiCoordinateManager.py MinkowskiKernelGenerator.py MinkowskiTensorField.py
             utils/quantization.py)
    for f in "${PATCHED[@]}"; do
        grep -q '^from collections import Sequence' "$SRC/MinkowskiEngine/$f" \
            || fail "patch" "MinkowskiEngine/$f has no 'from collections import Sequence' line (sdist changed?)"
        sed -i 's/^from collections import Sequence, namedtuple$/from collections import namedtuple\nfrom collections.abc import Sequence/; s/^from collections import Sequence$/from collections.abc import Sequence/' \
            "$SRC/MinkowskiEngine/$f"
    done
    ! grep -rq '^from collections import Sequence' "$SRC/MinkowskiEngine" || fail "patch" "a collections.Sequence import is left"
    sed -i '/^run_command("rm", "-rf", "build")$/d; /^run_command("pip", "uninstall", "MinkowskiEngine", "-y")$/d' "$SRC/setup.py"

    # 4. build
    say "compiling (CPU only, OpenBLAS, MAX_JOBS=${MAX_JOBS:-$(nproc)}); this takes 6 (idle) to 50 (loaded) minutes on 2 cores"
    (cd "$SRC" && PATH="$SCRATCH/shim:$PATH" MAX_JOBS="${MAX_JOBS:-$(nproc)}" SETUPTOOLS_USE_DISTUTILS=stdlib \
        "$PY" setup.py -q bdist_wheel --cpu_only --blas=openblas >"$SCRATCH/build.log" 2>&1) \
        || { tail -n 30 "$SCRATCH/build.log" >&2; fail "compile" "setup.py bdist_wheel failed (log tail above)"; }
    BUILT=$(ls "$SRC"/dist/*.whl 2>/dev/null | head -n1 || true)
    [ -n "$BUILT" ] || fail "compile" "setup.py finished without a wheel in dist/"

    # 5. cache (atomically: a killed build leaves no half-written wheel behind)
    mkdir -p "$CACHE_DIR"
    cp "$BUILT" "$CACHE_DIR/.partial.whl"
    WHEEL="$CACHE_DIR/$(basename "$BUILT" | tr '[:upper:]' '[:lower:]')"
    mv "$CACHE_DIR/.partial.whl" "$WHEEL"
    say "cached $WHEEL"
else
    say "reusing the cached wheel $WHEEL"
fi

if [ "${PVKD_ME_NO_INSTALL:-0}" = "1" ]; then
    echo "$WHEEL"
    exit 0
fi
"$PY" -m pip install -q --no-deps --force-reinstall "$WHEEL" || fail "install" "pip install $WHEEL failed"
(cd / && "$PY" -W ignore::UserWarning -c "import MinkowskiEngine as ME; assert ME.__version__ == '$ME_VERSION', ME.__version__") \
    || fail "install" "the installed MinkowskiEngine does not import with $PY"
say "MinkowskiEngine $ME_VERSION installed into $("$PY" -c 'import sys; print(sys.prefix)')"
