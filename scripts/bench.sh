#!/usr/bin/env bash
# The benchmark (bench/README.md): installs what it needs when missing
# (Debian's nginx, wrk, nghttp2-client for h2load, and pypy3; the project in
# .venv, and in .venv-pypy for PyPy), then runs bench/run.py with the arguments given, e.g.
#   scripts/bench.sh            # 10 s runs, medians of 3 (about 15 minutes)
#   scripts/bench.sh --quick    # 3 s runs, one each (about 3 minutes)
# Set BENCH_PYPY=0 to leave PyPy out.  Results: bench/results/latest.{md,json}.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/venv.sh
. scripts/venv.sh

debianInstall nginx wrk nghttp2-client
ensureVenv ""

# ensurePypyVenv: makes .venv-pypy with Debian's pypy3 (installed when the
# archive has it) and the project in it, editable; prints why not on
# failure.  cryptography and cffi come as binary wheels (no Rust here).
pypyMissing=
ensurePypyVenv() {
    if ! command -v pypy3 >/dev/null; then
        if apt-cache show pypy3 >/dev/null 2>&1; then
            local packages=(pypy3)
            apt-cache show pypy3-venv >/dev/null 2>&1 && packages+=(pypy3-venv)
            debianInstall "${packages[@]}" || true
        fi
        if ! command -v pypy3 >/dev/null; then
            pypyMissing="pypy3 is not available from this machine's package archive"
            return 1
        fi
    fi
    if ! .venv-pypy/bin/python -c 'import sys' >/dev/null 2>&1; then
        # Debian's pypy3 makes virtualenvs only with pypy3-venv.
        pypy3 -c 'import ensurepip' 2>/dev/null || debianInstall pypy3-venv || true
        rm -rf .venv-pypy
        if ! pypy3 -m venv .venv-pypy; then
            pypyMissing="pypy3 -m venv failed"
            return 1
        fi
    fi
    local hash
    hash=$(cat setup.cfg pyproject.toml scripts/venv.sh scripts/bench.sh | sha256sum | cut -d' ' -f1)
    [ "$(cat .venv-pypy/.installed 2>/dev/null)" = "$hash" ] && return 0
    echo "Installing the project into .venv-pypy"
    if ! .venv-pypy/bin/python -m pip install --quiet --disable-pip-version-check \
        --only-binary=cryptography,cffi,bcrypt --config-settings editable_mode=compat -e .; then
        pypyMissing="installing the project into .venv-pypy failed"
        return 1
    fi
    echo "$hash" >.venv-pypy/.installed
}

pypy=
if [ "${BENCH_PYPY:-1}" = 0 ]; then
    pypyMissing="BENCH_PYPY=0"
elif ensurePypyVenv; then
    pypy=$PWD/.venv-pypy/bin/python
fi

exec .venv/bin/python bench/run.py --pypy "$pypy" --pypy-missing "$pypyMissing" "$@"
