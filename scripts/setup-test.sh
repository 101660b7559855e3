#!/usr/bin/env bash
# Installs what the test suite needs beyond the build, only when missing:
# - a Python venv under $HOME/.cache/emberdb with numpy and scikit-learn (the evaluation
#   cross-check against the seed analysis) and what the Python client and its tests use (grpcio,
#   protobuf, pandas, tqdm, pytest; grpcio-tools, pinned, for the stale-stubs check; hnswlib, the
#   reference index `ember-graph-bench` measures the graph against);
# - Debian's dataset-fashion-mnist (the Python client's rollout example test and the benches);
# - Chromium (the `ember report` rendering test);
# - Prometheus and promtool (the scrape test, `promtool check metrics|rules`, `promtool test rules`).
set -euo pipefail
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_updated=0
apt_install() {
    if [ $apt_updated = 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

VENV="${EMBERDB_VENV:-$HOME/.cache/emberdb/venv}"
PY_PACKAGES=(numpy scikit-learn grpcio protobuf pandas tqdm pytest "grpcio-tools>=1.85,<1.86" "hnswlib==0.8.0")
if ! "$VENV/bin/python" -c 'import numpy, sklearn, grpc, google.protobuf, pandas, tqdm, pytest, grpc_tools, hnswlib' >/dev/null 2>&1; then
    echo "setup: preparing $VENV (${PY_PACKAGES[*]})"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >/dev/null 2>&1 || { apt_install python3-venv; python3 -m venv "$VENV"; }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    echo "setup: installing dataset-fashion-mnist"
    apt_install dataset-fashion-mnist
fi

if ! command -v chromium >/dev/null 2>&1; then
    echo "setup: installing chromium"
    apt_install chromium
fi

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    echo "setup: installing prometheus"
    apt_install --no-install-recommends prometheus
fi
