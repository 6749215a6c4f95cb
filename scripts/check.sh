#!/usr/bin/env bash
# The checks CI runs before the tests (scripts/test.sh runs this first):
#   ruff check, ruff format --check, mypy, and the import contracts
#   (lint-imports, contracts in setup.cfg).
# Stops at the first check that fails, saying which one and how to see or
# fix it.  Makes .venv as scripts/test.sh does (no Debian packages needed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/venv.sh
. scripts/venv.sh
ensureVenv test,lint

PATHS=(gateway tests twisted bench)

# runCheck NAME HINT COMMAND...: runs COMMAND; on failure says that NAME
# failed and what to run (HINT), and exits.
runCheck() {
    local name=$1 hint=$2 start status=0
    shift 2
    start=$SECONDS
    echo "check: $name ($*)"
    "$@" || status=$?
    if [ "$status" -ne 0 ]; then
        echo >&2
        echo "error: check '$name' failed (exit $status)." >&2
        echo "       $hint" >&2
        exit "$status"
    fi
    echo "check: $name passed in $((SECONDS - start))s"
}

runCheck "ruff check" \
    "See the lines above; '.venv/bin/ruff check --fix ${PATHS[*]}' fixes some." \
    .venv/bin/ruff check --quiet "${PATHS[@]}"
runCheck "ruff format" \
    "'.venv/bin/ruff format ${PATHS[*]}' formats them." \
    .venv/bin/ruff format --check --quiet "${PATHS[@]}"
runCheck "mypy" \
    "See the lines above (settings: [mypy] sections of setup.cfg)." \
    .venv/bin/mypy gateway twisted/plugins
runCheck "import contracts" \
    "A package imports one it must not (the layers and contracts: [importlinter] in setup.cfg)." \
    .venv/bin/lint-imports --no-cache
