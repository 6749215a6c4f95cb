#!/usr/bin/env bash
# Runs every test, on a fresh Debian machine (as root) with only Python:
# installs the Debian packages the tests use, makes .venv with the project
# and its test and lint extras, then runs pytest with the arguments given
# (e.g. scripts/test.sh -m 'not integration').  Quick when run again.
# GATEWAY_PYTHON=pypy3 scripts/test.sh runs them on PyPy instead
# (scripts/test-pypy.sh; opt-in, CI does not).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "${GATEWAY_PYTHON:-}" = pypy3 ]; then
    exec scripts/test-pypy.sh "$@"
fi
. scripts/venv.sh

# What the tests start for real: etcd, a browser for the web UI, nginx as a
# backend, wrk for load.
DEBIAN_PACKAGES="etcd-server chromium nginx wrk"

# shellcheck disable=SC2086
debianInstall $DEBIAN_PACKAGES
ensureVenv test,lint
exec .venv/bin/pytest "$@"
