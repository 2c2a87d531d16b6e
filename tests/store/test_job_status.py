"""The generated `job_status` column agrees with the rule of SPEC §2 on every combination of its inputs."""

from __future__ import annotations

import itertools
from datetime import timedelta
from uuid import uuid4

from prebuildd.domain.jobs import JobStatus, job_status
from prebuildd.runtime.clock import FakeClock
from prebuildd.store.db import Database

EXPECTED = {
    # (started, canceled, completed, error) -> status, written out from the specification, not from the code
    (False, False, False, False): "pending",
    (True, False, False, False): "running",
    (False, True, False, False): "canceling",
    (True, True, False, False): "canceling",
    (False, False, False, True): "failed",
    (True, False, False, True): "failed",
    (False, True, False, True): "failed",
    (True, True, False, True): "failed",
    (False, False, True, False): "succeeded",
    (True, False, True, False): "succeeded",
    (False, True, True, False): "canceled",
    (True, True, True, False): "canceled",
    (False, False, True, True): "failed",
    (True, False, True, True): "failed",
    (False, True, True, True): "failed",
    (True, True, True, True): "failed",
}


async def test_every_combination(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    async with db.transaction() as conn:
        org = uuid4()
        await conn.execute(
            "INSERT INTO organizations (id, name, created_at) VALUES (%s, 'o', %s)", (org, now)
        )
        for started, canceled, completed, error in itertools.product([False, True], repeat=4):
            at = now + timedelta(seconds=1)
            cur = await conn.execute(
                """
                INSERT INTO provisioner_jobs (id, organization_id, type, provisioner, created_at, updated_at,
                                              started_at, canceled_at, completed_at, error)
                VALUES (%s, %s, 'workspace_build', 'echo', %s, %s, %s, %s, %s, %s)
                RETURNING job_status
                """,
                (
                    uuid4(),
                    org,
                    now,
                    now,
                    at if started else None,
                    at if canceled else None,
                    at if completed else None,
                    "boom" if error else None,
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            key = (started, canceled, completed, error)
            assert row["job_status"] == EXPECTED[key], key
            assert job_status(
                started_at=at if started else None,
                canceled_at=at if canceled else None,
                completed_at=at if completed else None,
                error="boom" if error else None,
            ) is JobStatus(EXPECTED[key])


async def test_an_empty_error_is_no_error(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    async with db.transaction() as conn:
        org = uuid4()
        await conn.execute(
            "INSERT INTO organizations (id, name, created_at) VALUES (%s, 'o', %s)", (org, now)
        )
        cur = await conn.execute(
            """
            INSERT INTO provisioner_jobs (id, organization_id, type, provisioner, created_at, updated_at,
                                          started_at, completed_at, error)
            VALUES (%s, %s, 'workspace_build', 'echo', %s, %s, %s, %s, '') RETURNING job_status
            """,
            (uuid4(), org, now, now, now, now),
        )
        row = await cur.fetchone()
        assert row is not None and row["job_status"] == "succeeded"
