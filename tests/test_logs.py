"""Logging set-up (`prebuildd.cli.logs`): the standard library's records (uvicorn, asyncio, psycopg, warnings, an
uncaught exception) come out as structlog's, one JSON object per line with a traceback in ``exception``; console
text has colours on a terminal only."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from prebuildd.cli.logs import configure_logging

ANSI = "\x1b["


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Put back what configure_logging changes, for the tests that run after these in this process."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = (sys.excepthook,)
    config = structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)
        sys.excepthook = hooks[0]
        structlog.configure(**config)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = stream.getvalue().splitlines()
    assert lines
    return [json.loads(line) for line in lines]


def test_library_records_warnings_and_tracebacks_are_json_lines() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", access_log=True, stream=stream)
    logging.getLogger("uvicorn.error").error("Exception in ASGI application")
    logging.getLogger("psycopg.pool").error("error connecting in %r: %s", "pool-1", "connection refused")
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
        structlog.get_logger("prebuildd.test").exception("test.failed", job_id="j1")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("something is deprecated", DeprecationWarning, stacklevel=1)
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/readyz", "1.1", 200
    )
    structlog.get_logger("prebuildd.test").debug("test.hidden")  # below the level
    logging.getLogger("psycopg").info("psycopg chatter")  # libraries: warning and above at level info

    lines = _lines(stream)
    assert all({"event", "level", "timestamp"} <= set(line) for line in lines), lines
    by_logger = {line.get("logger", "prebuildd"): line for line in lines}
    assert set(by_logger) == {
        "uvicorn.error",
        "psycopg.pool",
        "asyncio",
        "prebuildd",
        "py.warnings",
        "uvicorn.access",
    }
    assert by_logger["psycopg.pool"]["event"] == "error connecting in 'pool-1': connection refused"
    assert by_logger["psycopg.pool"]["level"] == "error"
    assert "ZeroDivisionError: division by zero" in by_logger["asyncio"]["exception"]
    assert "Traceback" in by_logger["prebuildd"]["exception"] and by_logger["prebuildd"]["job_id"] == "j1"
    assert "something is deprecated" in by_logger["py.warnings"]["event"]
    access = by_logger["uvicorn.access"]
    assert (access["event"], access["method"], access["path"], access["status"]) == (
        "http.request",
        "GET",
        "/readyz",
        200,
    )


def test_the_access_log_is_off_unless_asked_for() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "c", "GET", "/", "1.1", 200)
    structlog.get_logger("prebuildd.test").info("test.marker")
    assert [line["event"] for line in _lines(stream)] == ["test.marker"]


def test_configured_twice_it_writes_each_line_once() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    configure_logging("json", "info", stream=stream)
    logging.getLogger("uvicorn.error").warning("once")
    assert len(_lines(stream)) == 1


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_text_has_no_ansi_codes_unless_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    plain = io.StringIO()
    configure_logging("console", "info", stream=plain)
    structlog.get_logger("prebuildd.test").warning("test.plain", n=1)
    logging.getLogger("uvicorn.error").error("library line")
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("prebuildd.test").exception("test.traceback")
    text = plain.getvalue()
    assert "test.plain" in text and "library line" in text and "ValueError: boom" in text
    assert ANSI not in text

    terminal = _Terminal()
    configure_logging("console", "info", stream=terminal)
    structlog.get_logger("prebuildd.test").warning("test.coloured")
    assert ANSI in terminal.getvalue()


def test_an_uncaught_exception_is_one_json_line() -> None:
    script = textwrap.dedent(
        """
        import threading
        from prebuildd.cli.logs import configure_logging
        configure_logging("json", "info")
        thread = threading.Thread(target=lambda: 1 / 0, name="worker")
        thread.start()
        thread.join()
        raise RuntimeError("nobody caught this")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(e["event"], e["level"]) for e in lines] == [("process.uncaught_exception", "critical")] * 2
    assert lines[0]["thread"] == "worker" and "ZeroDivisionError" in lines[0]["exception"]
    assert "RuntimeError: nobody caught this" in lines[1]["exception"]


def test_no_line_carries_a_password_whoever_logs_it() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    url = "postgresql://prebuildd:s3cret@db.internal:5432/prebuildd"
    structlog.get_logger("prebuildd.test").info("test.connecting", database=url)
    logging.getLogger("psycopg.pool").error("error connecting to %s: password=s3cret rejected", url)
    try:
        raise ConnectionError(f"cannot reach {url}")
    except ConnectionError:
        structlog.get_logger("prebuildd.test").exception("test.failed")
    lines = _lines(stream)
    assert len(lines) == 3
    assert "s3cret" not in stream.getvalue()
    assert lines[0]["database"] == "postgresql://prebuildd:REDACTED@db.internal:5432/prebuildd"
    assert "password=REDACTED" in lines[1]["event"]
    assert "prebuildd:REDACTED@db.internal" in lines[2]["exception"]
