#!/usr/bin/env bash
# The benchmark (bench/README.md): installs what it needs when missing
# (Debian's nginx, wrk, redis-server, nghttp2-client for h2load, and pypy3; the project in .venv, and in .venv-pypy
# for PyPy), then runs bench/run.py with the arguments given, e.g.
#   scripts/bench.sh            # 10 s runs, medians of 3 (about 40 minutes)
#   scripts/bench.sh --quick    # 3 s runs, one each (about 10 minutes)
# Set BENCH_PYPY=0 to leave PyPy out.  Results: bench/results/latest.{md,json}.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/venv.sh
. scripts/venv.sh

debianInstall nginx wrk redis-server nghttp2-client
ensureVenv bench

# PyPy's rows need Debian's pypy3 and the project in .venv-pypy
# (ensurePypyVenv in scripts/venv.sh); without them they are left out and
# the report says why.
pypy=
pypyMissing=
if [ "${BENCH_PYPY:-1}" = 0 ]; then
    pypyMissing="BENCH_PYPY=0"
elif ! command -v pypy3 >/dev/null && ! apt-cache show pypy3 >/dev/null 2>&1; then
    pypyMissing="pypy3 is not available from this machine's package archive"
elif ensurePypyVenv ""; then
    pypy=$PWD/.venv-pypy/bin/python
else
    pypyMissing="making .venv-pypy with Debian's pypy3 failed"
fi

exec .venv/bin/python bench/run.py --pypy "$pypy" --pypy-missing "$pypyMissing" "$@"
