#!/bin/sh
# What a few tests need from the system, beyond the venv: iproute2 and iptables for the
# multi-host tests (tests/e2e/test_partitions.py), chromium for the browser tests of the
# operator's pages (tests/e2e/test_ui.py, driven by Playwright from the venv). Installed from
# Debian's packages when this runs as root with apt; otherwise nothing is installed and those
# tests skip, saying why. Never fails the build.
need=""
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v iptables >/dev/null 2>&1 || need="$need iptables"
command -v chromium >/dev/null 2>&1 || need="$need chromium"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: not installing$need (needs root and apt-get); the tests that need them will skip"
    exit 0
fi
echo "test-deps: installing$need from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends $need >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends $need >/dev/null 2>&1; } \
    || echo "test-deps: could not install$need; the tests that need them will skip"
exit 0
