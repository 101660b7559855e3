#!/usr/bin/env bash
# Installs what building EmberDB needs on a fresh Debian machine, only when missing. Safe to run
# repeatedly; `make run`, `make build` and `make test` all start here, before anything else.
#
# libclang: librocksdb-sys runs bindgen, which loads the *C* library (`libclang.so*` or
# `libclang-N.so*`, package libclang1-N, brought by libclang-dev). Images often ship only
# `libclang-cpp.so.N` (the C++ interface, package libclang-cpp14 via llvm-14-dev), which bindgen
# cannot use, so a glob like `libclang*.so*` is not a test. We ask dpkg for libclang-dev, or, on a
# machine that did not install it through dpkg, look for the C library under the names bindgen
# searches (or at $LIBCLANG_PATH).
set -euo pipefail

have_libclang() {
    dpkg -s libclang-dev >/dev/null 2>&1 && return 0
    local dirs=(/usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/local/lib)
    [ -n "${LIBCLANG_PATH:-}" ] && dirs=("$LIBCLANG_PATH" "${dirs[@]}")
    local d f
    for d in "${dirs[@]}"; do
        for f in "$d"/libclang.so* "$d"/libclang-[0-9]*.so*; do
            [ -e "$f" ] && return 0
        done
    done
    return 1
}

missing=()
have_libclang || missing+=(libclang-dev)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)

if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    if ! have_libclang; then
        echo "setup: libclang-dev was installed but no libclang.so was found; bindgen will fail" >&2
        exit 1
    fi
fi
