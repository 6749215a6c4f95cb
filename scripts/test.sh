#!/usr/bin/env bash
# Runs every check and every test, on a fresh Debian machine (as root) with
# only Python: installs the Debian packages the tests use, makes .venv with
# the project and its test and lint extras, runs the checks (scripts/check.sh:
# ruff, ruff format, mypy, import contracts; stops at the first failure), then
# pytest with the arguments given (e.g. scripts/test.sh -m 'not integration').
# Quick when run again.
# GATEWAY_CHECKS=0 scripts/test.sh ... runs the tests alone (CI never does).
# GATEWAY_PYTHON=pypy3 scripts/test.sh runs them on PyPy instead
# (scripts/test-pypy.sh; CI, .ci/run, runs the unit tests that way too).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "${GATEWAY_PYTHON:-}" = pypy3 ]; then
    exec scripts/test-pypy.sh "$@"
fi
. scripts/venv.sh

# What the tests start for real: etcd, Redis (the fleet's limits), a browser
# for the web UI, nginx as a backend, wrk for load, curl and h2load
# (nghttp2-client) as HTTP/2 clients.
DEBIAN_PACKAGES="etcd-server redis-server chromium nginx wrk curl nghttp2-client"

# shellcheck disable=SC2086
debianInstall $DEBIAN_PACKAGES
ensureVenv test,lint
if [ "${GATEWAY_CHECKS:-1}" != 0 ]; then
    bash scripts/check.sh
fi
# Everything the tests need is installed above: a test that skips for a
# missing tool or server fails instead (tests/conftest.py), so that a broken
# install cannot pass as skipped tests.  GATEWAY_NO_SKIPS=0 allows skips.
export GATEWAY_NO_SKIPS="${GATEWAY_NO_SKIPS:-1}"
exec .venv/bin/pytest "$@"
