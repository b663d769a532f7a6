"""Render the API reference blocks of the two contract pages from the code.

A block names the public objects it lists (names of ``sltrader_plugins``, or
``module:name`` for one of a submodule) and holds, for each, its signature and the first
paragraph of its docstring, as ``help()`` would show them::

    <!-- api: Plugins SingleFlightCache -->
    ...
    <!-- /api -->

``python tools/render_api.py`` rewrites every block of docs/trader.md and
docs/plugin-author.md; ``--check`` changes nothing and exits 1 naming each block that
differs from the code (tests/test_contract_pages.py runs it). A signature on these pages
is therefore always the one the code has.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGES = (ROOT / "docs" / "trader.md", ROOT / "docs" / "plugin-author.md")
BLOCK = re.compile(r"(<!-- api: ([^>]+?) -->\n)(.*?)(<!-- /api -->)", re.S)
_ROLE = re.compile(r":(?:class|meth|func|data|attr):`~?([^`]+)`")


def resolve(name: str) -> Any:
    module, _, attr = name.rpartition(":")
    return getattr(importlib.import_module(module or "sltrader_plugins"), attr)


def _markdown(doc: str) -> str:
    """A docstring's first paragraph as one Markdown line."""
    first = doc.strip().split("\n\n")[0]
    first = _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", first)
    return " ".join(first.replace("``", "`").split()).removesuffix("::").rstrip(":") or ""


def _default(value: Any) -> str:
    if isinstance(value, type):
        return f"np.{value.__name__}" if value.__module__ == "numpy" else value.__name__
    if inspect.isbuiltin(value) or inspect.isfunction(value):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


def signature(function: Callable[..., Any], skip_self: bool = True) -> str:
    """``(a: int, *, b: str = 'x') -> None``, annotations as written in the source."""
    sig = inspect.signature(function)
    parts: list[str] = []
    star_done = False
    for index, param in enumerate(sig.parameters.values()):
        if skip_self and index == 0 and param.name in ("self", "cls"):
            continue
        text = param.name
        if param.kind is param.VAR_POSITIONAL:
            text, star_done = f"*{text}", True
        elif param.kind is param.VAR_KEYWORD:
            text = f"**{text}"
        elif param.kind is param.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        if param.annotation is not param.empty:
            text += f": {_annotation(param.annotation)}"
        if param.default is not param.empty:
            text += f" = {_default(param.default)}" if ": " in text else f"={param.default!r}"
        parts.append(text)
    result = f"({', '.join(parts)})"
    if sig.return_annotation is not sig.empty:
        result += f" -> {_annotation(sig.return_annotation)}"
    return result


def _annotation(value: Any) -> str:
    return value if isinstance(value, str) else inspect.formatannotation(value)


def _members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties the class itself defines (not ``object``'s)."""
    found = []
    for name, raw in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(raw, (staticmethod, classmethod)):
            found.append((name, raw.__func__))
        elif inspect.isfunction(raw) or isinstance(raw, property):
            found.append((name, raw))
    return found


def render_one(name: str) -> list[str]:
    obj = resolve(name)
    short = name.rpartition(":")[2]
    lines: list[str] = []
    if inspect.isclass(obj):
        doc = _markdown(inspect.getdoc(obj) or "")
        init = obj.__init__ if "__init__" in vars(obj) or hasattr(obj, "__attrs_attrs__") else None
        protocol = getattr(obj, "_is_protocol", False)
        if protocol or init is None or (issubclass(obj, Exception) and "__init__" not in vars(obj)):
            head = f"class {short}"
        else:
            head = f"{short}{signature(init).replace(' -> None', '')}"
        lines.append(f"- `{head}`: {doc}" if doc else f"- `{head}`")
        for member, value in _members(obj):
            if isinstance(value, property):
                text = f"{short}.{member}"
                doc = _markdown(inspect.getdoc(value) or "")
            else:
                text = f"{short}.{member}{signature(value)}"
                doc = _markdown(inspect.getdoc(value) or "")
            lines.append(f"  - `{text}`: {doc}" if doc else f"  - `{text}`")
    else:
        doc = _markdown(inspect.getdoc(obj) or "")
        head = f"{short}{signature(obj, skip_self=False)}"
        lines.append(f"- `{head}`: {doc}" if doc else f"- `{head}`")
    return lines


def render(names: str) -> str:
    return "".join(line + "\n" for name in names.split() for line in render_one(name))


def stale(pages: tuple[Path, ...] = PAGES, write: bool = False) -> list[str]:
    """``page: names`` of every block that differs from the code (rewritten if ``write``)."""
    found = []
    for page in pages:
        text = page.read_text(encoding="utf-8")

        def fresh(m: re.Match[str], page: Path = page) -> str:
            body = render(m.group(2))
            if body != m.group(3):
                where = page.relative_to(ROOT) if page.is_relative_to(ROOT) else page
                found.append(f"{where}: {m.group(2)}")
            return m.group(1) + body + m.group(4)

        new = BLOCK.sub(fresh, text)
        if write and new != text:
            page.write_text(new, encoding="utf-8")
    return found


def documented(pages: tuple[Path, ...] = PAGES) -> set[str]:
    """Every name an API block of ``pages`` lists."""
    return {
        name
        for page in pages
        for m in BLOCK.finditer(page.read_text(encoding="utf-8"))
        for name in m.group(2).split()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    found = stale(write=not args.check)
    for line in found:
        print(f"{'stale' if args.check else 'rendered'}: {line}")
    return 1 if args.check and found else 0


if __name__ == "__main__":
    sys.exit(main())
