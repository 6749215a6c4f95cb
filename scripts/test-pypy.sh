#!/usr/bin/env bash
# Runs the tests on PyPy (Debian's pypy3, Python 3.9): installs the Debian
# packages the tests use and pypy3, makes .venv-pypy with the project and
# its test extras (ensurePypyVenv in scripts/venv.sh), then runs pytest with
# the arguments given, e.g.
#   scripts/test-pypy.sh -m 'not integration'
# Also run by "GATEWAY_PYTHON=pypy3 scripts/test.sh".  CI (.ci/run) runs the
# unit tests this way after every CPython test (about a minute from a fresh
# .venv-pypy; the integration tests take about 8 more).  Without
# schemathesis and playwright (CPython-only extras), their tests are skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/venv.sh
. scripts/venv.sh

# What the tests start for real: etcd, nginx as a backend, wrk for load, curl and h2load as
# HTTP/2 clients (no browser: the browser tests need playwright).
debianInstall etcd-server redis-server nginx wrk curl nghttp2-client
ensurePypyVenv test
exec .venv-pypy/bin/pytest "$@"
