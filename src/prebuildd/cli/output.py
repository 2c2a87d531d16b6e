"""What the CLI prints: rich tables and JSON on stdout, notes and progress on stderr.

Results (tables, JSON, secrets, logs) go to stdout so they can be piped; everything else (what was done, warnings,
spinners) goes to stderr. Cells are printed as plain text, never as rich markup, since they hold user data.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from prebuildd.domain.durations import format_duration

JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]

_PIPE_WIDTH = 240
"""Table width when stdout is not a terminal: wide enough that piped tables do not wrap."""


def stdout_console() -> Console:
    width = None if sys.stdout.isatty() else _PIPE_WIDTH
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


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """An RFC 3339 timestamp as how long ago it was ('3m ago'); '-' for None, the text itself if unparsable."""
    if not timestamp:
        return "-"
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    if seconds < 0:
        return f"in {format_duration(round(-seconds))}"
    return f"{format_duration(round(seconds))} ago"


def print_table(columns: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str = "") -> None:
    """A borderless table on stdout; ``empty`` (on stderr) instead when there are no rows."""
    table = Table(*columns, box=None, pad_edge=False, header_style="bold")
    count = 0
    for row in rows:
        table.add_row(*(Text(cell(value)) for value in row))
        count += 1
    if count == 0:
        if empty:
            note(empty)
        return
    stdout_console().print(table)


def print_fields(fields: Sequence[tuple[str, object]]) -> None:
    """``name: value`` lines, aligned, on stdout (what `show` prints)."""
    width = max((len(name) for name, _ in fields), default=0)
    console = stdout_console()
    for name, value in fields:
        console.print(Text(f"{name + ':':<{width + 1}} {cell(value)}"))


class Waiting:
    """While waiting for a job: a spinner with the elapsed time on stderr, and the job's log lines on stdout.

    The spinner shows only when stderr is a terminal. When stdout is that terminal too, log lines are printed
    through the spinner's console so they scroll above it instead of tearing it.
    """

    def __init__(self, description: str, *, on_interrupt: str = "") -> None:
        self.description = description
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
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if kind is KeyboardInterrupt and self.on_interrupt:
            note(f"stopped waiting: {self.on_interrupt}")
            raise typer.Exit(130)

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
