"""The docs cannot rot: hook signatures, code blocks, names and the install line."""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from sltrader_plugins import hookspecs

ROOT = Path(__file__).resolve().parent.parent
SIGNATURES = [
    f"def {node.name}({ast.unparse(node.args)}) -> {ast.unparse(node.returns)}"
    for node in ast.parse(Path(hookspecs.__file__).read_text()).body
    if isinstance(node, ast.FunctionDef) and node.returns is not None
]


def test_every_hookspec_is_parsed():
    names = {signature.split("(")[0].removeprefix("def ") for signature in SIGNATURES}
    specs = {name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "sltrader_spec")}
    assert names == specs and len(names) >= 8


@pytest.mark.parametrize("signature", SIGNATURES, ids=lambda s: s.split("(")[0][4:])
def test_the_plugin_author_page_lists_the_hook_with_its_exact_signature(signature):
    assert signature in (ROOT / "docs" / "plugin-author.md").read_text()


def _doc_block(after: str, language: str) -> str:
    text = (ROOT / "docs" / "plugin-author.md").read_text()
    start = text.index(f"```{language}\n", text.index(after)) + len(language) + 4
    return text[start : text.index("```", start)]


def test_the_documented_example_plugin_works(fake_dist, fake_entry_points):
    from sltrader_plugins import HostServices, Signal
    from sltrader_plugins.config import Config, ConfigError
    from sltrader_plugins.manager import PluginManager

    source = _doc_block("`sltrader_signalcount.py`:", "python")
    entry_point = _doc_block("`pyproject.toml`:", "toml").split("[project.entry-points.sltrader]")
    assert entry_point[1].strip() == 'signalcount = "sltrader_signalcount:SignalCount"'
    fake_dist("signalcount", source, target="SignalCount")

    def start(section: dict) -> PluginManager:
        manager = PluginManager()
        manager.load(
            Config(plugins={"signalcount": section}), environ={}, entry_points=fake_entry_points()
        )
        manager.start(HostServices(None, None, None, "1m", 1, ("5m",)))  # type: ignore[arg-type]
        return manager

    manager = start({"log_every": 3})
    assert manager.active_names() == ["signalcount"]
    for side in ("buy", "buy", "sell"):
        signal = Signal("BTC_USDT", "1m", side, 0.9, 60.0)
        manager.hook.on_signal(signal=signal)
    assert manager.metrics() == {"signalcount.buy": 2, "signalcount.sell": 1}
    with pytest.raises(ConfigError, match=r"plugins\.signalcount.*log_every"):
        start({"log_every": 0})


# -- every code block of the README and docs uses names that exist ----------------------

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
OUR_MODULES = (
    "sltrader_plugins",
    "sltrader_batching",
    "sltrader_pooling",
    "sltrader_shared",
    "sltrader_warming",
)


def python_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in DOCS:
        text = path.read_text()
        for m in BLOCK.finditer(text):
            source = m.group(1)
            if source.startswith("def ") and source.count("\n") == 1:
                source = source.rstrip() + ": ..."  # a hook's signature in the reference
            blocks.append((f"{path.name}:{text[: m.start()].count(chr(10)) + 1}", source))
    return blocks


def our_names(tree: ast.AST) -> set[tuple[str, str]]:
    """``(module, name)`` for every ``from sltrader_x import name`` and ``sltrader_x.name``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(OUR_MODULES):
            found.update((node.module, alias.name) for alias in node.names)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in OUR_MODULES
        ):
            found.add((node.value.id, node.attr))
    return found


def free_names(tree: ast.AST) -> set[str]:
    """Names a block reads but neither binds nor imports (and that are not builtins)."""
    bound, read = set(dir(builtins)), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return read - bound


BLOCKS = python_blocks()


def test_the_docs_have_code_blocks():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("where, source", BLOCKS, ids=[where for where, _ in BLOCKS])
def test_every_name_a_code_block_imports_exists(where, source):
    for module_name, name in sorted(our_names(ast.parse(source))):
        if not module_name.startswith("sltrader_plugins"):
            pytest.importorskip(module_name)  # a plugin this environment does not install
        module = importlib.import_module(module_name)
        assert hasattr(module, name) or importlib.util.find_spec(f"{module_name}.{name}"), (
            f"{where}: {module_name} has no {name}"
        )


# Complete blocks: every name they read they define or import (the others are fragments
# of a trader, like a hook's signature, whose names still have to exist: see above).
COMPLETE = [(where, source) for where, source in BLOCKS if not free_names(ast.parse(source))]


def test_some_blocks_are_complete_programs():
    assert len(COMPLETE) >= 2


@pytest.mark.parametrize("where, source", COMPLETE, ids=[where for where, _ in COMPLETE])
def test_complete_code_blocks_run_and_print_what_they_say(where, source, monkeypatch, capsys):
    tree = ast.parse(source)
    monkeypatch.setenv("SLTRADER_PLUGINS", "")  # the block's own behaviour, not a plugin's
    exec(compile(tree, where, "exec"), {"__name__": "__doc_block__"})
    printed = capsys.readouterr().out.splitlines()
    # ``print(x)  # [1, 2]``: where the comment is a literal, it is what the line prints
    comments = [_comment(line) for line in source.splitlines() if "print(" in line]
    for line, comment in zip(printed, comments, strict=True):
        if comment is not None and _is_literal(comment):
            assert line == comment, f"{where}: printed {line}, the doc says {comment}"


def _comment(line: str) -> str | None:
    return line.split("#", 1)[1].strip() if "#" in line else None


def _is_literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return False
    return True


def test_the_testing_example_runs_with_the_example_plugin(capsys):
    namespace: dict = {"__name__": "__doc_block__"}
    exec(_doc_block("`sltrader_signalcount.py`:", "python"), namespace)
    testing = _doc_block("Testing a plugin:", "python")
    exec(testing, namespace)
    promised = testing.split("print(manager.metrics())  # ")[1].splitlines()[0]
    assert capsys.readouterr().out.strip() == promised


INSTALL = "python3 -m pip install '.[host]' ./plugins/batching ./plugins/pooling ./plugins/warming"
# The page of the plugin for several processes adds it to the same line.
INSTALL_SHARED = f"{INSTALL} ./plugins/shared"


def test_one_install_line_on_every_page():
    pages = 0
    for path in DOCS:
        for line in path.read_text().splitlines():
            if "pip install" in line and "./plugins/" in line:
                expected = INSTALL_SHARED if path.name == "shared.md" else INSTALL
                assert expected in line, f"{path.name}: {line}"
                pages += 1
    assert pages >= 4


def test_every_test_the_reliability_page_cites_exists():
    text = (ROOT / "docs" / "reliability.md").read_text()
    cited = re.findall(r"`((?:tests|plugins|examples)/[\w/]+\.py)::(\w+)", text)
    assert len(cited) >= 15
    for path, name in cited:
        assert f"def {name}(" in (ROOT / path).read_text(), f"{path}::{name}"


def _heading_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces
    as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _outside_code(path: Path) -> str:
    return re.sub(r"```.*?```", "", path.read_text(), flags=re.S)


def broken_links(pages: list[Path]) -> list[str]:
    """Every relative link of ``pages`` to a file that does not exist, or to a heading
    its page does not have."""
    found = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", _outside_code(page)):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            name, _, anchor = target.partition("#")
            dest = (page.parent / name).resolve() if name else page
            if not dest.exists():
                found.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", _outside_code(dest), flags=re.M)
                if anchor not in {_heading_anchor(h) for h in headings}:
                    found.append(f"{page.name}: {target} (no such heading)")
    return found


def test_every_link_of_the_docs_reaches_its_page_and_heading():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert broken_links(pages) == []


def test_a_link_to_a_heading_that_moved_is_found(tmp_path):
    page = "# A\n\n## When it pays\n\nsee [b](b.md#gone), [a](#when-it-pays)\n"
    (tmp_path / "a.md").write_text(page)
    (tmp_path / "b.md").write_text("# B\n\n```\n# gone\n```\n")
    assert broken_links([tmp_path / "a.md"]) == ["a.md: b.md#gone (no such heading)"]
    (tmp_path / "b.md").unlink()
    assert broken_links([tmp_path / "a.md"]) == ["a.md: b.md#gone (no such file)"]


def typed_ratios(text: str) -> list[str]:
    """Ratios such as ``x0.70`` outside the rendered figure blocks and code blocks: a
    measured figure typed by hand."""
    text = re.sub(r"<!-- figure:.*?<!-- /figure -->", "", text, flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"\bx\d+\.\d+", text)


def test_no_page_types_a_measured_ratio():
    typed = {path.name: typed_ratios(path.read_text()) for path in DOCS}
    assert {name: found for name, found in typed.items() if found} == {}


def test_a_typed_ratio_is_found_and_a_rendered_one_is_not():
    page = "all x0.69 of none\n<!-- figure: a.json -->\nx0.70\n<!-- /figure -->\n```\nx0.71\n```\n"
    assert typed_ratios(page) == ["x0.69"]
