"""How a long-lived prebuildd process logs: every line on stderr goes through structlog, as console text or one
JSON object per line (``event``, ``level``, ``timestamp``, a traceback in ``exception``).

structlog's own events and the standard library's records (uvicorn, asyncio, psycopg and its pool, ``warnings``,
an exception nothing caught) meet in one stdlib handler whose ``ProcessorFormatter`` renders them alike, so a
log shipper never sees a plain-text line or a bare traceback. Console output has colours only on a terminal.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from types import TracebackType
from typing import Any, TextIO

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from prebuildd.domain.redaction import scrub_credentials

ACCESS_LOGGER = "uvicorn.access"
_HANDLER_NAME = "prebuildd"
# Other libraries log at warning and above unless the level asks for less: their info lines (uvicorn's
# "Started server process", psycopg's pool internals) are not an operator's concern.
_LIBRARY_FLOOR = logging.WARNING


def _access_fields(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """uvicorn's access record (``%s - "%s %s HTTP/%s" %d``) as an ``http.request`` event with fields."""
    record = event_dict.get("_record")
    args = event_dict.pop(
        "positional_args", None
    )  # the message already has them; only access lines keep them
    if record is not None and record.name == ACCESS_LOGGER and isinstance(args, tuple) and len(args) == 5:
        client, http_method, path, http_version, status = args
        event_dict.update(
            event="http.request",
            client=client,
            method=http_method,
            path=path,
            http_version=http_version,
            status=status,
        )
    return event_dict


def _logger_name(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """A library's record names its logger (``uvicorn.error``, ``psycopg.pool``); ours are known by event."""
    record = event_dict.get("_record")
    if record is not None and not event_dict.get("_from_structlog"):
        event_dict.setdefault("logger", record.name)
        if isinstance(event_dict.get("event"), str):
            event_dict["event"] = event_dict["event"].rstrip()  # warnings end their text with a newline
    return event_dict


def _redact_credentials(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """No line carries a URL's password or a ``password=`` value, whoever logged it (a library's message, an
    exception's text, a field holding a database URL): the net under the explicit redaction of known URLs."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = scrub_credentials(value)
    return event_dict


def _colours(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def configure_logging(
    log_format: str, level: str, *, access_log: bool = False, stream: TextIO | None = None
) -> None:
    """Route every log of this process to ``stream`` (stderr) through structlog, as ``log_format`` (console or
    json) at ``level``; ``access_log`` adds one ``http.request`` line per HTTP request."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning or error")
    stream = stream or sys.stderr
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
        final: list[Processor] = [structlog.processors.format_exc_info, _redact_credentials, renderer]
    else:
        colours = _colours(stream)
        renderer = structlog.dev.ConsoleRenderer(
            colors=colours,
            exception_formatter=(
                structlog.dev.RichTracebackFormatter() if colours else structlog.dev.plain_traceback
            ),
        )
        final = [_redact_credentials, renderer]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _access_fields, _logger_name, structlog.stdlib.ExtraAdder()],
        pass_foreign_args=True,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)  # configured again in one process (tests): one handler, never two
    root.addHandler(handler)
    root.setLevel(max(numeric, _LIBRARY_FLOOR))
    logging.getLogger("prebuildd").setLevel(numeric)
    access = logging.getLogger(ACCESS_LOGGER)
    access.setLevel(logging.INFO if access_log else logging.WARNING)
    access.propagate = True  # uvicorn's own set-up (access_log=False) cuts it off; this handler decides
    logging.captureWarnings(True)
    _route_uncaught_exceptions()


def _route_uncaught_exceptions() -> None:
    """An exception nothing caught (in the main thread or another) is a ``process.uncaught_exception`` line,
    not a bare traceback."""
    log = structlog.get_logger("prebuildd.process")

    def main_hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        log.critical(
            "process.uncaught_exception", error=f"{kind.__name__}: {value}", exc_info=(kind, value, tb)
        )

    def thread_hook(args: Any) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        log.critical(
            "process.uncaught_exception",
            thread=getattr(args.thread, "name", None),
            error=f"{args.exc_type.__name__}: {args.exc_value}",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = main_hook
    threading.excepthook = thread_hook
