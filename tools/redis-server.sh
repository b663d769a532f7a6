#!/bin/sh
# Make sure a real Redis server binary is on PATH: the shared plugin's tests and
# `sltrader bench --traders N` start private ones. It comes from Debian's `redis-server`
# package (installed with apt-get when missing; as root, or through sudo).
set -eu
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1; then
    as_root="sudo"
else
    echo "redis-server is not installed and this user cannot install it: run 'apt-get install redis-server' as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$as_root apt-get install -y -qq redis-server >/dev/null 2>&1 \
    || { $as_root apt-get update -qq && $as_root apt-get install -y -qq redis-server >/dev/null; }
# The package starts a system-wide server on 6379; the tests start their own on free ports.
command -v redis-server >/dev/null 2>&1 || { echo "installing redis-server failed" >&2; exit 1; }
