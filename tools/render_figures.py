"""Render every bench table in README.md and docs/*.md from its committed JSON.

A table lives between two markers naming its JSON (a ``sltrader bench --trader ... --json``
file, a ``sltrader bench --json`` one of the reference workload, or one of
``bench/load_time.py`` or ``bench/peer_batching.py``, committed under docs/bench/)::

    <!-- figure: docs/bench/stock-trader.json -->
    ...what ``sltrader report docs/bench/stock-trader.json --markdown`` prints...
    <!-- /figure -->

``python tools/render_figures.py`` rewrites every such block; ``--check`` changes nothing
and exits 1 naming each block that differs from its JSON (tests/test_figures.py runs it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from sltrader_plugins.bench import reference as host_bench
from sltrader_plugins.bench import trader as trader_bench

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- figure: (\S+) -->\n)(.*?)(<!-- /figure -->)", re.S)


def _bench(name: str) -> ModuleType:
    # bench/ is a folder of scripts, not a package
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def format_markdown(result: dict[str, Any]) -> str:
    """The Markdown of a bench JSON, by what made it."""
    if "load_ms" in result:
        return str(_bench("load_time").format_markdown(result))
    if "points" in result:
        return str(_bench("peer_batching").format_markdown(result))
    if "scans" in result:  # the reference workload's bench: its own text table
        found = result["machine"]
        return (
            f"```text\n{host_bench.format_table(result)}\n```\n\n"
            f"Command: `{shlex.join(result['command'])}`\n"
            f"Machine: {found['platform']}, {found['cpus']} CPUs, Python {found['python']}.\n"
        )
    return trader_bench.format_markdown(result)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def render(text: str) -> str:
    """``text`` with every figure block rendered from its JSON."""

    def block(match: re.Match[str]) -> str:
        result = json.loads((ROOT / match[2]).read_text(encoding="utf-8"))
        return f"{match[1]}{format_markdown(result)}{match[4]}"

    return BLOCK.sub(block, text)


def stale() -> list[str]:
    """The pages whose figures differ from their JSON."""
    return [str(p.relative_to(ROOT)) for p in pages() if render(p.read_text()) != p.read_text()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    if args.check:
        differ = stale()
        for page in differ:
            print(f"{page}: a figure differs from its JSON", file=sys.stderr)
        return 1 if differ else 0
    for page in pages():
        text = page.read_text()
        if (new := render(text)) != text:
            page.write_text(new)
            print(f"rendered {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
