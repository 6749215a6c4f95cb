#!/usr/bin/env bash
# Runs every test on PyPy (Debian's pypy3, Python 3.9): installs the Debian
# packages the tests use and pypy3, makes .venv-pypy with the project and its
# test extras, then runs pytest with the arguments given, e.g.
#   scripts/test-pypy.sh -m 'not integration'
# Also run by "GATEWAY_PYTHON=pypy3 scripts/test.sh".  Opt-in: CI does not run
# it (about 2 minutes of unit tests and 8 of integration tests).  Without
# schemathesis and playwright (CPython-only extras), their tests are skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/venv.sh
. scripts/venv.sh

# What the tests start for real: etcd, nginx as a backend, wrk for load, curl
# and h2load as HTTP/2 clients (no browser: the browser tests need
# playwright).
debianInstall etcd-server nginx wrk pypy3 curl nghttp2-client
# Debian's pypy3 makes virtualenvs only with pypy3-venv.
pypy3 -c 'import ensurepip' 2>/dev/null || debianInstall pypy3-venv
if ! .venv-pypy/bin/python -c 'import sys' >/dev/null 2>&1; then
    rm -rf .venv-pypy
    pypy3 -m venv .venv-pypy
fi
hash=$(cat setup.cfg pyproject.toml scripts/venv.sh scripts/test-pypy.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv-pypy/.installed-test 2>/dev/null)" != "$hash" ]; then
    echo "Installing the project into .venv-pypy (.[test])"
    # cryptography, cffi and bcrypt as binary wheels: no Rust toolchain here.  compat:
    # see ensureVenv in scripts/venv.sh (twistd must find twisted/plugins).
    .venv-pypy/bin/python -m pip install --quiet --disable-pip-version-check \
        --only-binary=cryptography,cffi,bcrypt --config-settings editable_mode=compat -e '.[test]'
    echo "$hash" >.venv-pypy/.installed-test
fi
exec .venv-pypy/bin/pytest "$@"
