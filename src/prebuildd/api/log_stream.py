"""Following a job's log: NDJSON lines as they are written, then an end marker once the job is no longer active.

The stream wakes on the log and job-completion notifications and polls as a fallback (a notification is only a
hint). It starts listening before each read, so a notification sent during the read is not missed, and it reads
the job's status before its lines: a job seen finished has all its lines in the same read. No database
connection is held while the stream waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from uuid import UUID

from prebuildd.api.models import LogEnd, LogLineOut
from prebuildd.domain.jobs import JobStatus
from prebuildd.store import channels, jobs
from prebuildd.store.db import Database
from prebuildd.store.listener import Listener

POLL_SECONDS = 1.0
"""The longest a follower waits when no notification comes (a lost notification costs at most this)."""
PAGE_SIZE = 1000

MEDIA_TYPE = "application/x-ndjson"


async def _news(listener: Listener, timeout: float) -> None:
    """Return on a log or job-completion notification, or after ``timeout`` seconds."""
    waits = [
        asyncio.create_task(listener.wait(channel, timeout))
        for channel in (channels.JOB_LOGS, channels.JOB_COMPLETED)
    ]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def follow_job_logs(db: Database, listener: Listener, job_id: UUID, after: int) -> AsyncIterator[bytes]:
    """NDJSON ``LogLine``s of ``job_id`` after line ``after``, ending with ``{"end": true, "status": …}``."""
    while True:
        news = asyncio.create_task(_news(listener, POLL_SECONDS))
        try:
            async with db.transaction() as conn:
                status = await jobs.job_status(conn, job_id)
                lines = await jobs.logs_after(conn, job_id, after, PAGE_SIZE)
            for line in lines:
                after = line.id
                yield (LogLineOut.from_line(line).model_dump_json() + "\n").encode()
            if len(lines) == PAGE_SIZE:
                continue  # more lines are waiting: read on before waiting
            if status is None or not JobStatus(status).is_active:
                yield (LogEnd(status=status or "unknown").model_dump_json() + "\n").encode()
                return
            await news
        finally:
            news.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await news
