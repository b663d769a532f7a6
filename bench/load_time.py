"""What ``Plugins.load()`` costs a trader's start-up, after ``import sltrader_plugins``.

Each repeat is a fresh ``python -X importtime`` process (bytecode caches as a user's
installed packages have them) that imports ``sltrader_plugins``, then times
``Plugins.load()`` with the installed plugins and their configuration (shared without a
``url``). Per repeat the bench keeps the load's wall time, the modules the load imported
and ``-X importtime``'s cumulative microseconds of the outermost of them; the JSON holds
every repeat, the summary their medians::

    python bench/load_time.py --repeats 15 --json docs/bench/load.json
    python bench/load_time.py --markdown docs/bench/load.json

The load must not import redis-py (shared imports it only when given a ``url``) nor any
module of the reference trader, the bench, the command line, its output or the served
exchange (``sltrader_plugins.host``, ``.bench``, ``.cli``, ``.output``, ``.served``): the
bench fails if it does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sltrader_plugins.bench.trader import machine

#: What a trader that does not use them must not import while loading plugins.
FORBIDDEN = (
    "redis",
    "sltrader_plugins.host",
    "sltrader_plugins.bench",
    "sltrader_plugins.cli",
    "sltrader_plugins.output",
    "sltrader_plugins.served",
)

_CHILD = """
import json, sys, time
import sltrader_plugins
from sltrader_plugins import Plugins
print("--load--", file=sys.stderr, flush=True)
before = set(sys.modules)
start = time.perf_counter()
plugins = Plugins.load()
wall = time.perf_counter() - start
new = sorted(set(sys.modules) - before)
print("--end--", file=sys.stderr, flush=True)
print(json.dumps({"wall_s": wall, "modules": new, "active": plugins.active()}))
"""

_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def measure_once() -> dict[str, Any]:
    """One fresh process: the load's wall time, what it imported, and the cumulative
    import time of the outermost modules it imported."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _CHILD],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    found = json.loads(done.stdout)
    during = done.stderr.split("--load--", 1)[1].split("--end--", 1)[0]
    outermost = [
        int(cumulative)
        for _, cumulative, indent, _name in _LINE.findall(during)
        if len(indent) == 1
    ]
    return {
        "wall_s": found["wall_s"],
        "import_us": sum(outermost),
        "modules": found["modules"],
        "active": found["active"],
    }


def forbidden(modules: Sequence[str]) -> list[str]:
    """The modules of ``modules`` a plugin load must not import."""
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def run(repeats: int, command: Sequence[str]) -> dict[str, Any]:
    runs = []
    for done in range(1, repeats + 1):
        runs.append(measure_once())
        print(f"[{done}/{repeats}] {runs[-1]['wall_s'] * 1000:.1f} ms", file=sys.stderr)
    wrong = sorted({m for r in runs for m in forbidden(r["modules"])})
    if wrong:
        raise SystemExit(f"Plugins.load() imported {', '.join(wrong)}")
    return {
        "command": list(command),
        "machine": machine(),
        "repeats": repeats,
        "active": runs[0]["active"],
        "load_ms": statistics.median(r["wall_s"] for r in runs) * 1000,
        "import_ms": statistics.median(r["import_us"] for r in runs) / 1000,
        "runs": runs,
    }


def format_markdown(result: dict[str, Any]) -> str:
    """One line per figure; the same JSON gives the same text."""
    machine = result["machine"]
    return (
        f"`Plugins.load()` with {', '.join(result['active']) or 'no plugin'} "
        f"(shared without a `url`), after `import sltrader_plugins`: "
        f"{result['load_ms']:.1f} ms, {result['import_ms']:.1f} ms of it importing the "
        f"plugins (`-X importtime`), median of {result['repeats']} fresh processes; "
        "neither redis-py nor the reference trader, bench or command line imported.\n"
        f"Command: `{shlex.join(result['command'])}`\n"
        f"Machine: {machine['platform']}, {machine['cpus']} CPUs, Python {machine['python']}.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/load_time.py", description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", type=Path, help="write every repeat and the medians")
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="render a saved run")
    args = parser.parse_args(argv)
    if args.markdown is not None:
        print(format_markdown(json.loads(args.markdown.read_text())), end="")
        return 0
    command = ["python", "bench/load_time.py", *(sys.argv[1:] if argv is None else argv)]
    result = run(args.repeats, command)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(format_markdown(result), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
