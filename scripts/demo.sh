#!/usr/bin/env bash
# The README tour: starts three demo backends (127.0.0.1:9001-9003) and the
# gateway of demo/gateway.yaml (proxy on :8080, admin on :9090) in the
# foreground.  Ctrl-C stops everything.
#
#   scripts/demo.sh                          # on CPython (.venv)
#   GATEWAY_PYTHON=pypy3 scripts/demo.sh     # on PyPy (.venv-pypy, Debian's pypy3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/venv.sh

if [ "${GATEWAY_PYTHON:-}" = pypy3 ]; then
    if ! ensurePypyVenv ""; then
        echo "error: cannot make .venv-pypy with Debian's pypy3 (see above)" >&2
        exit 1
    fi
    venv=.venv-pypy
    # PyPy's GC nursery sized for a proxy (see the README's PyPy section).
    export PYPY_GC_NURSERY=${PYPY_GC_NURSERY:-32MB}
else
    ensureVenv ""
    venv=.venv
fi
"$venv/bin/python" -m gateway.demo --ports 9001,9002,9003 &
demoPID=$!
trap 'kill "$demoPID" 2>/dev/null || true' EXIT

cat <<'TOUR'

Try, in another terminal:
  curl -s localhost:8080/api/users/7                      # load balanced: demo-9001, demo-9002, ...
  curl -s localhost:8080/api/users/7 -H 'X-Canary: yes'   # routed to the canary, demo-9003
  curl -s 'localhost:8080/api/orders?user=7'
  curl -s localhost:8080/api/users/7/overview             # aggregation of user + orders
  curl -s localhost:9090/api/v1/apis -H 'Authorization: Bearer demo-token'
  Web UI: http://localhost:9090/ (token: demo-token)
The access log (one JSON line per request) and the gateway's own log are
printed below.

TOUR
"$venv/bin/twistd" -n --pidfile= gateway --config demo/gateway.yaml
