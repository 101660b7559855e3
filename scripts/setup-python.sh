#!/usr/bin/env bash
# Creates the Python environment the evaluation cross-check test uses (numpy and
# scikit-learn in a venv under $HOME/.cache/emberdb), only when it is missing.
set -euo pipefail
VENV="${EMBERDB_VENV:-$HOME/.cache/emberdb/venv}"
if ! "$VENV/bin/python" -c 'import numpy, sklearn' >/dev/null 2>&1; then
    echo "setup: creating $VENV with numpy and scikit-learn"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check numpy scikit-learn
fi
