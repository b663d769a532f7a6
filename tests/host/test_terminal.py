"""``sltrader run`` and ``sltrader bench`` on a terminal (a live bar, tables) and not (plain).

A terminal is a rich ``Console`` forced to be one, writing to a ``StringIO`` at a fixed
width; plain mode is what pytest's captured streams are (not terminals). Nothing here
asserts on timing: only on what is shown and how it lines up.
"""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest
from rich.console import Console

from sltrader_plugins import hookimpl
from sltrader_plugins.cli import build_parser, main
from sltrader_plugins.host.figures import figures
from sltrader_plugins.host.loop import Host
from sltrader_plugins.manager import PluginManager
from sltrader_plugins.output.report import format_report, report_tables
from sltrader_plugins.output.terminal import Terminal

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RUN = ["run", "--size", "small", "--cycles", "3", "--plugins", ""]
BENCH = ["bench", "--size", "small", "--cycles", "2", "--repeats", "1", "--sets", "none"]


@pytest.fixture
def plain_environment(monkeypatch):
    """No variable that makes rich take a pipe for a terminal (a CI may set them)."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


class Screen:
    """A terminal: stdout and stderr as forced-terminal consoles, 100 columns wide."""

    def __init__(self) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()
        self.terminal = Terminal(self._console(self.out), self._console(self.err))

    @staticmethod
    def _console(file: io.StringIO) -> Console:
        return Console(
            file=file,
            force_terminal=True,
            force_interactive=True,  # a bar even where TERM=dumb
            width=100,
            color_system="standard",
        )

    def run(self, argv: list[str]) -> int:
        args = build_parser().parse_args(argv)
        return args.func(args, self.terminal)

    def text(self, stream: io.StringIO) -> str:
        return ANSI.sub("", stream.getvalue())


def lines_of(text: str, labels: list[str]) -> list[str]:
    """The first table line that shows each label (as a cell: two spaces around it)."""
    found = []
    for label in labels:
        line = next(line for line in text.splitlines() if f"  {label}  " in line)
        found.append(line.rstrip())
    return found


def assert_aligned(lines: list[str], labels: list[str]) -> None:
    # Labels left-aligned in one column, values right-aligned in another.
    assert len({line.index(label) for line, label in zip(lines, labels, strict=True)}) == 1, lines
    assert len({len(line) for line in lines}) == 1, lines


def test_the_mode_is_plain_when_the_streams_are_not_terminals(plain_environment):
    terminal = Terminal.detect()
    assert not terminal.tables and not terminal.live
    assert not Terminal().tables and not Terminal().live  # without rich: plain


@pytest.mark.slow
def test_run_on_a_terminal_shows_a_bar_and_aligned_tables(capsys):
    screen = Screen()
    assert screen.run(RUN) == 0
    err, out = screen.text(screen.err), screen.text(screen.out)
    assert "\x1b[" in screen.err.getvalue()  # a live display: cursor moves and colours
    # the bar: done out of all, elapsed and time left, the last scan
    assert "sltrader run" in err and "3/3 cycles" in err and "━" in err
    assert "elapsed" in err and "left" in err and "last scan" in err
    assert "sltrader: cycle" not in err  # not the plain lines
    # the report: one table of sections, labelled by the figures
    assert out.startswith("sltrader run: small workload")
    header = next(line for line in out.splitlines() if "section" in line)
    assert header.split() == ["section", "figure", "value"]
    for section in ("decisions", "scans", "model", "features", "cache", "plugins"):
        assert re.search(rf"^\s+{section}\s", out, re.MULTILINE), section
    figs = figures()
    labels = [
        figs["signals"].label,
        figs["cycles"].label,
        figs["scan_wall_s"].label,
        figs["model_s_per_prediction"].label,
        figs["cache_hit_rate"].label,
        figs["exchange_requests"].label,
        "decisions digest",
        "active plugins",
    ]
    assert_aligned(lines_of(out, labels), labels)
    assert "plugin counters" not in out  # no plugin, no counters
    assert capsys.readouterr() == ("", "")  # everything went to the terminal's consoles


@pytest.mark.slow
def test_run_not_on_a_terminal_prints_the_plain_lines(capsys, plain_environment):
    assert main(RUN) == 0
    out, err = capsys.readouterr()
    assert not ANSI.search(out) and not ANSI.search(err)
    assert "sltrader: cycle 3/3 (last scan " in err and "━" not in err
    lines = out.splitlines()
    assert lines[0].startswith("sltrader run: small workload, seed ")
    assert lines[1].startswith("  cycles            3 (scan every ")
    assert "  active plugins    none" in lines and lines[-1].startswith("  decisions digest  ")


def test_logs_go_above_the_bar_not_through_it(capsys):
    # basicConfig's handler keeps the stderr it was made with: while the bar is live,
    # its lines must go through the terminal's console, above the bar.
    screen = Screen()
    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(handler)
    try:
        with screen.terminal.cycles(2) as progress:
            assert progress is not None
            logging.getLogger("sltrader_test").warning("a plugin says hello")
            progress(1, 2, 0.01)
            progress(2, 2, 0.01)
        assert handler.stream is sys.stderr  # given back after the bar
    finally:
        logging.getLogger().removeHandler(handler)
    assert "a plugin says hello" in screen.text(screen.err)
    assert "hello" not in capsys.readouterr().err


def test_quiet_has_no_progress():
    with Screen().terminal.cycles(5, quiet=True) as progress:
        assert progress is None


class Saving:
    """A plugin whose counters are not in name order: what it saved first."""

    def __init__(self, counters: dict[str, float]) -> None:
        self.counters = counters

    @hookimpl
    def report_metrics(self):
        return self.counters


def test_plugin_counters_are_grouped_per_plugin_in_each_plugins_order(tiny):
    manager = PluginManager()
    manager.register(Saving({"saved": 5.0, "calls": 9.0, "another": 1.0}), "zeta")
    manager.register(Saving({"hit_rate": 0.5, "hits": 3.0}), "alpha")
    report = Host(tiny, manager).run(cycles=2)
    # plugins by name, each one's counters as it returned them (not sorted)
    assert list(report.plugin_metrics) == [
        "alpha.hit_rate",
        "alpha.hits",
        "zeta.saved",
        "zeta.calls",
        "zeta.another",
    ]
    assert [t.title for t in report_tables(report)] == [report_tables(report)[0].title]
    _, counters = report_tables(report, counters=True)
    assert counters.columns == ("plugin", "counter", "value")
    assert counters.groups == [
        [("alpha", "hit_rate", "0.5"), ("", "hits", "3")],
        [("zeta", "saved", "5"), ("", "calls", "9"), ("", "another", "1")],
    ]
    screen = Screen()
    screen.terminal.report("plain", [counters])
    out = screen.text(screen.out)
    assert out.index("alpha") < out.index("hit_rate") < out.index("zeta") < out.index("another")
    assert_aligned(lines_of(out, ["hits", "calls"]), ["hits", "calls"])


class Summing(Saving):
    @hookimpl
    def report_summary(self):
        return f"saved {self.counters['saved']:g} calls"


def test_each_plugin_says_in_one_line_what_it_bought_and_counters_are_behind_a_flag(tiny):
    manager = PluginManager()
    manager.register(Summing({"saved": 5.0}), "zeta")
    manager.register(Saving({"hits": 3.0}), "alpha")  # no line of its own
    report = Host(tiny, manager).run(cycles=2)
    assert report.plugin_summaries == {"zeta": "saved 5 calls"}
    text = format_report(report)
    assert "what each plugin bought" in text and "zeta         saved 5 calls" in text
    assert "zeta.saved" not in text and "plugin counters" not in text
    assert "zeta.saved" in format_report(report, counters=True)
    _, bought = report_tables(report)
    assert bought.title == "what each plugin bought"
    assert bought.groups == [[("zeta", "saved 5 calls")]]


@pytest.mark.slow
def test_bench_on_a_terminal_shows_a_bar_and_a_table(tmp_path):
    screen = Screen()
    assert screen.run([*BENCH, "--json", str(tmp_path / "bench.json")]) == 0
    err, out = screen.text(screen.err), screen.text(screen.out)
    assert "sltrader bench" in err and "1/1 runs" in err and "left" in err
    assert "sltrader bench: repeat" not in err
    assert out.startswith("sltrader bench: small workload, 1 repeats")
    header = next(line for line in out.splitlines() if "metric" in line)
    assert header.split() == ["metric", "none"]
    labels = [figures()[name].label for name in ("scan_p99_s", "cache_hit_rate", "run_seconds")]
    labels.append("decisions digest")
    assert_aligned(lines_of(out, labels), labels)
    assert "decisions digests: all equal" in out
    assert (tmp_path / "bench.json").exists()


@pytest.mark.slow
def test_bench_not_on_a_terminal_prints_the_plain_lines(capsys, plain_environment):
    assert main(BENCH) == 0
    out, err = capsys.readouterr()
    assert not ANSI.search(out) and not ANSI.search(err)
    assert "sltrader bench: repeat 1/1, set none" in err
    lines = out.splitlines()
    assert lines[0] == "sltrader bench: small workload, 1 repeats, medians (ratio vs none)"
    assert lines[1].split() == ["metric", "none"]
    assert lines[-1].startswith("decisions digest") and lines[-1].endswith("(all equal)")
