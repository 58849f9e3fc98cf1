#!/usr/bin/env bash
# Ensures a headless-capable Chromium is installed (Debian's `chromium` package) and prints the
# path of its binary on stdout. Idempotent: does nothing when chromium is already on PATH.
#
# Used by the nat-dashboard browser test (crates/nat-dashboard/tests/browser.rs). Needs root (or
# sudo) and access to the Debian mirrors the first time only.
#
# Usage: scripts/ensure-chromium.sh            # install if missing, print the binary path
#        NAT_CHROMIUM=/path/to/chrome scripts/ensure-chromium.sh   # use that binary instead
set -euo pipefail

find_chromium() {
    if [[ -n "${NAT_CHROMIUM:-}" ]]; then
        if [[ -x "${NAT_CHROMIUM}" ]]; then
            echo "${NAT_CHROMIUM}"
            return 0
        fi
        echo "ensure-chromium: NAT_CHROMIUM=${NAT_CHROMIUM} is not an executable file" >&2
        return 2
    fi
    local candidate
    for candidate in chromium chromium-browser google-chrome-stable google-chrome; do
        if command -v "${candidate}" >/dev/null 2>&1; then
            command -v "${candidate}"
            return 0
        fi
    done
    return 1
}

if path="$(find_chromium)"; then
    echo "${path}"
    exit 0
elif [[ $? -eq 2 ]]; then
    exit 2
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: chromium is not installed and apt-get is not available;" \
        "install Chromium and set NAT_CHROMIUM to its binary" >&2
    exit 1
fi

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "ensure-chromium: chromium is not installed and this is not root (no sudo);" \
            "run: apt-get install -y chromium" >&2
        exit 1
    fi
fi

echo "ensure-chromium: installing Debian's chromium package" >&2
export DEBIAN_FRONTEND=noninteractive
# A stale package index is the usual reason for a 404; refresh once and retry.
if ! ${SUDO} apt-get install -y --no-install-recommends chromium fonts-dejavu-core >&2; then
    ${SUDO} apt-get update >&2
    ${SUDO} apt-get install -y --no-install-recommends chromium fonts-dejavu-core >&2
fi

if path="$(find_chromium)"; then
    echo "${path}"
    exit 0
fi
echo "ensure-chromium: apt-get finished but no chromium binary is on PATH" >&2
exit 1
