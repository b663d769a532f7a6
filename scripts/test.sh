#!/usr/bin/env bash
# The test command: installs tox in a private venv and runs every tox environment
# (lint, all plugins on Python 3.10 and 3.13, no plugin, each plugin alone).
set -euo pipefail
cd "$(dirname "$0")/.."

# pyenv shims only expose the selected versions: select every 3.x installed, so tox finds
# python3.10 ... python3.13 on a machine that has them through pyenv.
if command -v pyenv >/dev/null 2>&1; then
    versions="$(pyenv versions --bare --skip-aliases 2>/dev/null | grep -E '^3\.[0-9]+\.[0-9]+$' | sort -t. -k2,2nr -k3,3nr | tr '\n' ':')"
    export PYENV_VERSION="${versions%:}"
fi

runner=.tox/.runner
if [ ! -x "$runner/bin/tox" ]; then
    python3 -m venv "$runner"
    "$runner/bin/python" -m pip install -q --upgrade pip
    "$runner/bin/python" -m pip install -q 'tox>=4.11'
fi
exec "$runner/bin/tox" run "$@"
