#!/usr/bin/env bash
# Install headless Chromium (Debian's `chromium` package) for the report test (tests/test_report.py).
# Idempotent: does nothing when chromium is already there. Needs root (apt-get); otherwise it says why
# and exits non-zero, and the report test then skips with that reason.
set -euo pipefail

for candidate in /usr/bin/chromium /usr/bin/chromium-browser; do
    if [ -x "$candidate" ]; then
        echo "chromium: already installed ($candidate)"
        exit 0
    fi
done

if [ "$(id -u)" -ne 0 ]; then
    echo "chromium: not installed and not root; run 'sudo apt-get install -y chromium' (Debian/Ubuntu)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium: not installed and apt-get is missing; install a Chromium build by hand" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium
if [ ! -x /usr/bin/chromium ]; then
    echo "chromium: apt-get finished but /usr/bin/chromium is missing" >&2
    exit 1
fi
echo "chromium: installed ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
