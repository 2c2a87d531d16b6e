"""What the CLI prints: rich tables and JSON on stdout, notes and progress on stderr.

Results (tables, JSON, secrets, logs) go to stdout so they can be piped; everything else (what was done, warnings,
spinners) goes to stderr. Cells are printed as plain text, never as rich markup, since they hold user data.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from prebuildd.domain.durations import format_duration

JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]

_PIPE_WIDTH = 240
"""Table width when stdout is not a terminal: wide enough that piped tables do not wrap."""


def stdout_console() -> Console:
    """The console results go to: a terminal's width (or ``$COLUMNS``); 240 columns when piped, so that piped
    tables are not cut. Colour only on a terminal, never with ``NO_COLOR`` set (rich reads both)."""
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit() else _PIPE_WIDTH
    return Console(file=sys.stdout, highlight=False, soft_wrap=False, width=width)


def stderr_console() -> Console:
    return Console(file=sys.stderr, highlight=False)


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (what `--json` prints: the API's own JSON)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def note(message: str) -> None:
    """A line for the human at the terminal (stderr)."""
    print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def cell(value: object) -> str:
    """One value as table text: '-' for nothing, yes/no, k=v lists, timestamps as their age."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={cell(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(cell(item) for item in value)
    return str(value)


def _now() -> datetime:
    """The time ages are counted from (one place, so that rendering tests can fix it)."""
    return datetime.now(UTC)


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """An RFC 3339 timestamp as how long ago it was ('3m ago', 'in 27d'), in at most two units, the second only
    when the first is below 10 ('5m30s ago', '3h ago'); '-' for None, the text itself if unparsable."""
    if not timestamp:
        return "-"
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = ((now or _now()) - moment).total_seconds()
    if seconds < 0:
        return f"in {_coarse(-seconds)}"
    return f"{_coarse(seconds)} ago"


def _coarse(seconds: float) -> str:
    whole = round(seconds)
    for unit, size, smaller, smaller_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if whole >= size:
            count, rest = divmod(whole, size)
            extra = rest // smaller_size
            return f"{count}{unit}{extra}{smaller}" if count < 10 and extra else f"{count}{unit}"
    return f"{whole}s"


_GAP = "  "
_MIN_WIDTH = 6
"""The narrowest a cut column gets (its header's width when wider)."""
_KEEP = frozenset({"ID", "#"})
"""Columns never cut to fit: an id cut short cannot be pasted into the next command."""


def one_line(text: str) -> str:
    """The first line of ``text``, with '…' when more lines follow (a table cell holds one line)."""
    first, _, rest = text.strip().partition("\n")
    return f"{first.rstrip()} …" if rest.strip() else first


def fit_widths(natural: Sequence[int], minimum: Sequence[int], width: int, gap: int = len(_GAP)) -> list[int]:
    """Column widths that fit ``width``: the widest cuttable column loses a character until the table fits or
    every column is at its ``minimum`` (a column whose minimum equals its natural width is never cut)."""
    widths = list(natural)
    excess = sum(widths) + gap * max(len(widths) - 1, 0) - width
    while excess > 0:
        cuttable = [i for i, w in enumerate(widths) if w > minimum[i]]
        if not cuttable:
            break
        widest = max(cuttable, key=lambda i: (widths[i], i))
        widths[widest] -= 1
        excess -= 1
    return widths


def render_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    width: int,
    *,
    cut: bool = True,
    right: Collection[str] = (),
    keep: Collection[str] = (),
    minimums: Mapping[str, int] | None = None,
) -> list[Text]:
    """The table's lines: a bold header, then one line per row, cells separated by two spaces.

    With ``cut``, columns are cut to fit ``width`` (widest first, never below their header; cut text ends in
    '…'); without it every cell is whole (``--wide``). A cell is text or a styled rich ``Text`` (a coloured
    status word); multi-line text keeps its first line. ``right`` names the columns aligned right (counts),
    ``keep`` those never cut (besides ids), ``minimums`` the narrowest some may be cut to.
    """
    cells = [
        [value if isinstance(value, Text) else Text(one_line(cell(value))) for value in row] for row in rows
    ]
    headers = [Text(name, style="bold") for name in columns]
    natural = [max([h.cell_len, *(r[i].cell_len for r in cells)]) for i, h in enumerate(headers)]
    floors = minimums or {}
    minimum = [
        natural[i]
        if (name in _KEEP or name in keep or not cut)
        else min(natural[i], max(len(name), floors.get(name, _MIN_WIDTH)))
        for i, name in enumerate(columns)
    ]
    widths = fit_widths(natural, minimum, width) if cut else natural
    lines = []
    for row in [headers, *cells]:
        line = Text()
        for i, value in enumerate(row):
            piece = value.copy()
            last = i == len(row) - 1
            if piece.cell_len > widths[i]:
                piece.truncate(widths[i], overflow="ellipsis")
            elif columns[i] in right:
                piece.pad_left(widths[i] - piece.cell_len)
            elif not last:
                piece.pad_right(widths[i] - piece.cell_len)
            line.append_text(piece)
            if not last:
                line.append(_GAP)
        line.rstrip()
        lines.append(line)
    return lines


def print_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    empty: str = "",
    cut: bool = True,
    right: Collection[str] = (),
    keep: Collection[str] = (),
    minimums: Mapping[str, int] | None = None,
) -> None:
    """A borderless table on stdout, fitted to the console's width (see ``render_table``); ``empty`` (on
    stderr) instead when there are no rows."""
    materialised = [list(row) for row in rows]
    if not materialised:
        if empty:
            note(empty)
        return
    console = stdout_console()
    for line in render_table(
        columns, materialised, console.width, cut=cut, right=right, keep=keep, minimums=minimums
    ):
        console.print(line, soft_wrap=True)


def print_lines(lines: Iterable[str]) -> None:
    """Plain lines on stdout (notes that belong to a result, such as the errors under a status table)."""
    console = stdout_console()
    for line in lines:
        console.print(Text(line), soft_wrap=True)


def print_fields(fields: Sequence[tuple[str, object]]) -> None:
    """``name: value`` lines, aligned, on stdout (what `show` prints)."""
    width = max((len(name) for name, _ in fields), default=0)
    console = stdout_console()
    for name, value in fields:
        # a multi-line value (an error) keeps its lines, indented under the first
        text = cell(value).strip("\n").replace("\n", "\n" + " " * (width + 2))
        console.print(Text(f"{name + ':':<{width + 1}} {text}"), soft_wrap=True)


class Waiting:
    """While waiting for a job: a spinner with the elapsed time on stderr, and the job's log lines on stdout.

    The spinner shows only when stderr is a terminal. When stdout is that terminal too, log lines are printed
    through the spinner's console so they scroll above it instead of tearing it.
    """

    def __init__(self, description: str, *, on_interrupt: str = "") -> None:
        self.description = description
        self.base = description
        """The description without the job's status (``update`` adds it)."""
        self.on_interrupt = on_interrupt
        """What Ctrl-C leaves running, and how to pick it up again (Ctrl-C then ends with exit code 130)."""
        self.started = time.monotonic()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._stage: str | None = None

    def __enter__(self) -> Waiting:
        console = stderr_console()
        if console.is_terminal:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=None)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
        if kind is KeyboardInterrupt and self.on_interrupt:
            note(f"stopped waiting: {self.on_interrupt}")
            raise typer.Exit(130)

    def stop(self) -> None:
        """Take the spinner off the terminal (before a final message)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def say(self, text: str) -> None:
        """A line about the wait itself (why the job waits) on stderr, above the spinner when there is one."""
        if self._progress is not None:
            self._progress.console.print(Text(text))
        else:
            note(text)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def took(self) -> str:
        """The time since the wait began, for humans ('took 4s')."""
        return format_duration(self.elapsed) if self.elapsed >= 1 else f"{self.elapsed:.1f}s"

    def update(self, description: str) -> None:
        self.description = description
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=description)

    def line(self, text: str) -> None:
        """One line of output on stdout."""
        if self._progress is not None and sys.stdout.isatty():
            self._progress.console.print(Text(text))
        else:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def log(self, entry: Mapping[str, Any]) -> None:
        """One API LogLine: a header when its stage changes, then its output."""
        stage = entry.get("stage") or None
        if stage and stage != self._stage:
            self._stage = stage
            self.line(f"==> {stage}")
        self.line(str(entry.get("output", "")))
