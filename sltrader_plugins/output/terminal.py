"""How ``sltrader run`` and ``sltrader bench`` write: a live bar and tables on a terminal,
plain lines anywhere else.

The mode is decided once, when a :class:`Terminal` is built, for each stream on its own:
progress goes to stderr and is a live bar when stderr is an interactive terminal; reports
go to stdout and are tables when stdout is a terminal. A pipe, a file or a CI log gets
the plain lines (one progress line per tenth of a run, the report's aligned text), which
stay greppable; so ``sltrader run > report.txt`` shows the bar and writes plain text.
``--json`` files do not depend on the mode.

rich comes with the ``host`` extra. It is imported only when a command runs, so
``sltrader plugins`` and ``--version`` need nothing but the core; without rich, every
stream is plain.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TextIO

import attrs

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

#: ``Host.run``'s progress: cycles done, cycles in all, the last scan's wall time (s).
CycleProgress = Callable[[int, int, float], None]
#: The bench's progress, called as each run starts: its repeat (from 0) and set name.
RunProgress = Callable[[int, str], None]

Row = tuple[str, ...]


@attrs.frozen
class Table:
    """What a report shows as one table, whichever the mode (a :class:`Terminal` draws it).

    :ivar columns: the header. The first ``labels`` columns name a row (left-aligned),
        the others are values (right-aligned, so digits line up).
    :ivar groups: rows, in groups separated by a rule.
    :ivar caption: a line under the table.
    """

    title: str
    columns: Row
    groups: list[list[Row]]
    labels: int = 1
    caption: str = ""


class Terminal:
    """Where the commands write progress (stderr) and reports (stdout), and how.

    :param out: the console for reports; ``None``: plain text to ``sys.stdout``.
    :param err: the console for progress; ``None``: plain lines to ``sys.stderr``.
        Tests pass consoles of their own (``Console(file=..., force_terminal=True)``);
        the commands use :meth:`detect`.
    """

    def __init__(self, out: Console | None = None, err: Console | None = None) -> None:
        self.out = out
        self.err = err
        # Decided here, once, so a run never mixes modes. A live bar redraws itself in
        # place, which needs a terminal that understands cursor moves (not TERM=dumb).
        self.tables = out is not None and out.is_terminal
        self.live = err is not None and err.is_interactive

    @classmethod
    def detect(cls) -> Terminal:
        """The process's stdout and stderr, tables and a bar where they are terminals."""
        try:
            from rich.console import Console
        except ImportError:  # the core without the host extra: plain text still works
            return cls()
        return cls(Console(), Console(stderr=True))

    def _plain(self, console: Console | None, default: TextIO) -> TextIO:
        # A console's file is resolved when written to (pytest's capture, a redirect).
        return console.file if console is not None else default

    # -- progress (stderr) ------------------------------------------------------------

    @contextlib.contextmanager
    def cycles(self, total: int, quiet: bool = False) -> Iterator[CycleProgress | None]:
        """``Host.run``'s ``progress`` for a run of ``total`` cycles (``None`` if quiet)."""
        if quiet:
            yield None
        elif not self.live:
            every = max(1, total // 10)  # ten lines a run: enough to follow, few to grep

            def line(done: int, total: int, scan_s: float) -> None:
                if done % every == 0 or done == total:
                    print(
                        f"sltrader: cycle {done}/{total} (last scan {scan_s * 1000:.0f} ms)",
                        file=self._plain(self.err, sys.stderr),
                        flush=True,
                    )

            yield line
        else:
            # The cycles of one run take about as long each: the default recent-speed
            # estimate of the time left is right.
            with self._bar("sltrader run", total, "cycles") as (progress, task):

                def advance(done: int, total: int, scan_s: float) -> None:
                    detail = f"last scan {scan_s * 1000:.0f} ms"
                    progress.update(task, completed=done, detail=detail)

                yield advance

    @contextlib.contextmanager
    def runs(self, repeats: int, sets: Sequence[str]) -> Iterator[RunProgress]:
        """The bench's progress over its ``repeats x len(sets)`` runs."""
        if not self.live:

            def line(repeat: int, name: str) -> None:
                print(
                    f"sltrader bench: repeat {repeat + 1}/{repeats}, set {name}",
                    file=self._plain(self.err, sys.stderr),
                    flush=True,
                )

            yield line
            return
        total = repeats * len(sets)
        # A run takes seconds and the sets differ: the time left is estimated from every
        # run so far, not from the last 30 s (rich's default, which may hold one run).
        with self._bar("sltrader bench", total, "runs", speed_period=24 * 3600.0) as bar:
            progress, task = bar
            started = 0

            def start(repeat: int, name: str) -> None:
                nonlocal started
                detail = f"repeat {repeat + 1}/{repeats}, set {name}"
                progress.update(task, completed=started, detail=detail)
                started += 1

            yield start
            progress.update(task, completed=total, detail="")

    @contextlib.contextmanager
    def _bar(
        self, title: str, total: int, unit: str, speed_period: float = 30.0
    ) -> Iterator[tuple[Progress, TaskID]]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        # Text columns without markup: a set's name is the user's text, "[" and all.
        progress = Progress(
            TextColumn("{task.description}", markup=False, style="bold"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            TextColumn("elapsed,"),
            TimeRemainingColumn(),
            TextColumn("left"),
            TextColumn("{task.fields[detail]}", markup=False),
            console=self.err,
            redirect_stdout=False,  # stdout is the report's; nothing else writes there
            speed_estimate_period=speed_period,
        )
        before = sys.stderr
        with progress:
            task = progress.add_task(title, total=total, detail="")
            with _logs_above_the_bar(before):
                yield progress, task

    # -- reports (stdout) -------------------------------------------------------------

    def report(self, plain: str, tables: Sequence[Table]) -> None:
        """A report on stdout: ``tables`` on a terminal, the ``plain`` text elsewhere."""
        if not self.tables or self.out is None:
            print(plain, file=self._plain(self.out, sys.stdout), flush=True)
            return
        from rich import box
        from rich.table import Table as RichTable
        from rich.text import Text

        for i, table in enumerate(tables):
            if i:
                self.out.print()
            # Title and caption as lines of their own: a table's would wrap at its width.
            # Text, not str, here and in the cells: printed as is, never read as markup.
            self.out.print(Text(table.title, style="bold"))
            drawn = RichTable(box=box.SIMPLE_HEAD)
            for column, name in enumerate(table.columns):
                value = column >= table.labels
                style = "bold" if column == 0 and table.labels > 1 else None
                drawn.add_column(Text(name), justify="right" if value else "left", style=style)
            for group in table.groups:
                for n, row in enumerate(group):
                    drawn.add_row(*(Text(cell) for cell in row), end_section=n == len(group) - 1)
            self.out.print(drawn)
            if table.caption:
                self.out.print(Text(table.caption))


@contextlib.contextmanager
def _logs_above_the_bar(stderr: TextIO) -> Iterator[None]:
    """Log lines go above the live bar instead of through it.

    While the bar is live, rich stands in for ``sys.stderr`` and prints what is written
    there above the bar; a logging handler keeps the stream it was made with, so the
    handlers on the old stderr (``logging.basicConfig``'s) write to the stand-in.
    """
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is stderr
    ]
    for handler in handlers:
        handler.setStream(sys.stderr)
    try:
        yield
    finally:
        for handler in handlers:
            handler.setStream(stderr)
