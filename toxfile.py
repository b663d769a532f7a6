"""tox's in-tree plugin: let tox find every Python that pyenv installed.

pyenv's shims only expose the selected versions, so on a machine whose Pythons come from
pyenv, ``python3.10`` and ``python3.13`` are not found unless selected. Selecting every
installed 3.x (``PYENV_VERSION``, passed to the environments in ``tox.ini``) fixes that
without touching the machine's global pyenv setting.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

_VERSION = re.compile(r"^3\.(\d+)\.(\d+)$")


def _pyenv_versions() -> list[str]:
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return []
    listed = subprocess.run(
        [pyenv, "versions", "--bare", "--skip-aliases"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    found = [v for v in listed if _VERSION.match(v)]
    return sorted(found, key=lambda v: tuple(map(int, v.split("."))), reverse=True)


if "PYENV_VERSION" not in os.environ and (versions := _pyenv_versions()):
    os.environ["PYENV_VERSION"] = ":".join(versions)
