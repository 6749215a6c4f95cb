# shellcheck shell=bash
# Sourced by the scripts (from the repository root): Debian packages on
# demand, the project's virtualenv in .venv (ensureVenv), and its PyPy
# virtualenv in .venv-pypy (ensurePypyVenv).

# The interpreter the virtualenv is made with: python3 on PATH unless set.
PYTHON=${PYTHON:-python3}
_aptUpdated=

# debianInstall PACKAGE...: installs those of the Debian packages that are
# not installed yet (apt-get update once, first); nothing when all are.
debianInstall() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null; then
        echo "error: these Debian packages are needed: ${missing[*]} (no apt-get here)" >&2
        return 1
    fi
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "Installing Debian packages: ${missing[*]}"
    if [ -z "$_aptUpdated" ]; then
        $sudo apt-get update -qq
        _aptUpdated=1
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensureVenv [EXTRAS]: makes .venv if missing (or broken) and installs the
# project into it in editable mode, with EXTRAS (e.g. "test,lint").  The
# install is skipped while setup.cfg, pyproject.toml and this file are
# unchanged since the last one with the same extras (a stamp file in .venv).
ensureVenv() {
    local extras=${1:-}
    if ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
        if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
            echo "error: Python 3.9 or later is needed as '$PYTHON' (set PYTHON=...)" >&2
            return 1
        fi
        # Debian's python3 makes virtualenvs only with python3-venv.
        "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || debianInstall python3-venv
        rm -rf .venv
        "$PYTHON" -m venv .venv
    fi
    local hash stamp spec=.
    hash=$(cat setup.cfg pyproject.toml scripts/venv.sh | sha256sum | cut -d' ' -f1)
    stamp=".venv/.installed-${extras:-base}"
    [ -n "$extras" ] && spec=".[$extras]"
    if [ -z "$extras" ]; then
        # Any install of the project (with or without extras) will do.
        grep -qx "$hash" .venv/.installed-* 2>/dev/null && return 0
    elif [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then
        return 0
    fi
    echo "Installing the project into .venv ($spec)"
    # compat: a .pth with the repository root, so that Twisted finds the
    # twisted/plugins folder (twistd gateway) from any directory; the default
    # editable mode's import hook hides it from Twisted's plugin search.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        --config-settings editable_mode=compat -e "$spec"
    echo "$hash" >"$stamp"
}

# ensurePypyVenv [EXTRAS]: makes .venv-pypy with Debian's pypy3 (Python
# 3.9; installs pypy3, and pypy3-venv without which it makes no
# virtualenv, when missing) and installs the project into it in editable
# mode with EXTRAS, as ensureVenv does for .venv: skipped while nothing it
# depends on changed.  cryptography, cffi and bcrypt come as binary wheels
# (no Rust toolchain needed).  Returns non-zero, saying why, when it cannot.
ensurePypyVenv() {
    local extras=${1:-}
    if ! command -v pypy3 >/dev/null; then
        debianInstall pypy3 || return 1
    fi
    pypy3 -c 'import ensurepip' 2>/dev/null || debianInstall pypy3-venv || return 1
    if ! .venv-pypy/bin/python -c 'import sys' >/dev/null 2>&1; then
        rm -rf .venv-pypy
        pypy3 -m venv .venv-pypy || return 1
    fi
    local hash stamp spec=.
    hash=$(cat setup.cfg pyproject.toml scripts/venv.sh | sha256sum | cut -d' ' -f1)
    stamp=".venv-pypy/.installed-${extras:-base}"
    [ -n "$extras" ] && spec=".[$extras]"
    if [ -z "$extras" ]; then
        grep -qx "$hash" .venv-pypy/.installed-* 2>/dev/null && return 0
    elif [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then
        return 0
    fi
    echo "Installing the project into .venv-pypy ($spec)"
    # compat: see ensureVenv (twistd must find twisted/plugins).
    .venv-pypy/bin/python -m pip install --quiet --disable-pip-version-check \
        --only-binary=cryptography,cffi,bcrypt --config-settings editable_mode=compat -e "$spec" \
        || return 1
    echo "$hash" >"$stamp"
}
