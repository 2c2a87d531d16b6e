-- name: insert
-- The notification wakes idle daemons at commit; it is a hint, daemons poll as well. Its payload is the
-- provisioner, then the tags on a second line when there are any (so that the daemons woken are ones it fits);
-- tags too long for a notification (8,000 bytes) become "*", which wakes every idle daemon.
WITH job AS (
    INSERT INTO provisioner_jobs (id, organization_id, type, provisioner, tags, priority, input, initiator_id,
                                  created_at, updated_at)
    VALUES (%(id)s, %(organization_id)s, %(type)s, %(provisioner)s, %(tags)s, %(priority)s, %(input)s,
            %(initiator_id)s, %(now)s, %(now)s)
    RETURNING id, provisioner, tags
)
SELECT job.id,
       pg_notify('prebuildd_job_queued',
                 job.provisioner || CASE WHEN job.tags = '{}' THEN ''
                                         WHEN octet_length(job.tags::text) > 7000 THEN E'\n*'
                                         ELSE E'\n' || job.tags::text END)
FROM job;

-- name: insert_completed
-- A job that never runs: a refused build recorded as failed (error set), or an orphan delete (no error).
INSERT INTO provisioner_jobs (id, organization_id, type, provisioner, tags, priority, input, initiator_id,
                              created_at, updated_at, completed_at, error, failure_class)
VALUES (%(id)s, %(organization_id)s, %(type)s, %(provisioner)s, %(tags)s, %(priority)s, %(input)s,
        %(initiator_id)s, %(now)s, %(now)s, %(now)s, %(error)s, %(failure_class)s)
RETURNING id;

-- name: acquire
-- Takes the next job a daemon can run (human jobs before prebuild jobs, then oldest; a job's tags must all be
-- offered by the daemon, and a daemon of an organization's key takes only that organization's jobs (a null
-- organization: any)) and returns everything it runs in the same statement: the version's manifest and archive,
-- and for a build its build, workspace, owner, template and preset (one round trip, run in autocommit).
WITH job AS (
    UPDATE provisioner_jobs
    SET started_at = %(now)s, updated_at = %(now)s, worker_id = %(worker_id)s
    WHERE id = (
        SELECT id FROM provisioner_jobs
        WHERE job_status = 'pending'
          AND provisioner = ANY(%(kinds)s)
          AND tags <@ %(tags)s
          AND (%(organization_id)s::uuid IS NULL OR organization_id = %(organization_id)s::uuid)
        ORDER BY priority, created_at
        FOR UPDATE SKIP LOCKED
        LIMIT 1
    )
    RETURNING id, type, provisioner, (input ->> 'template_version_id')::uuid AS import_version_id
)
SELECT job.id, job.type, job.provisioner, coalesce(b.template_version_id, job.import_version_id) AS version_id,
       v.manifest, v.source, v.source_hash, v.agents,
       b.id AS build_id, b.build_number, b.transition, b.parameters, b.reason, b.state AS previous_state,
       w.id AS workspace_id, w.name AS workspace_name, w.owner_id, u.username AS owner_name,
       w.owner_id = %(prebuilds_user_id)s AS is_prebuild, t.name AS template_name, p.name AS preset_name
FROM job
LEFT JOIN workspace_builds b ON b.job_id = job.id AND job.type = 'workspace_build'
LEFT JOIN workspaces w ON w.id = b.workspace_id
LEFT JOIN users u ON u.id = w.owner_id
LEFT JOIN templates t ON t.id = w.template_id
LEFT JOIN template_versions v ON v.id = coalesce(b.template_version_id, job.import_version_id)
LEFT JOIN template_version_presets p ON p.id = b.preset_id;

-- name: pending_kinds
-- The provisioners and tags of pending jobs (the process's one poll: which idle daemons to wake).
SELECT DISTINCT provisioner, tags FROM provisioner_jobs WHERE job_status = 'pending' LIMIT 100;

-- name: heartbeat
-- A running job is alive; the answer says whether it was canceled (no row: no longer this worker's).
UPDATE provisioner_jobs SET updated_at = %(now)s
WHERE id = %(id)s AND worker_id = %(worker_id)s AND completed_at IS NULL
RETURNING canceled_at IS NOT NULL AS canceled;

-- name: insert_logs
-- Lines are appended only to a job this worker still holds; one statement for a batch, with a wake-up.
WITH owned AS (
    SELECT id FROM provisioner_jobs
    WHERE id = %(job_id)s AND worker_id = %(worker_id)s AND completed_at IS NULL
), logs AS (
    INSERT INTO provisioner_job_logs (job_id, created_at, level, stage, output)
    SELECT owned.id, l.created_at, l.level, l.stage, l.output
    FROM owned, unnest(%(created_at)s::timestamptz[], %(levels)s::text[], %(stages)s::text[], %(outputs)s::text[])
         AS l (created_at, level, stage, output)
    RETURNING job_id
)
SELECT count(*) AS inserted, pg_notify('prebuildd_job_logs', %(job_id)s::text)
FROM logs;

-- name: complete
-- Only the daemon holding the job may finish it: a job already failed as stale stays failed.
UPDATE provisioner_jobs
SET completed_at = %(now)s, updated_at = %(now)s, error = %(error)s, failure_class = %(failure_class)s
WHERE id = %(id)s AND worker_id = %(worker_id)s AND completed_at IS NULL
RETURNING id, type, job_status, input, organization_id;

-- name: completed_by_worker
-- Whether this worker itself completed the job (a repeated completion whose first answer was lost). Only jobs a
-- worker held are completed with a worker id set; those failed for a lost daemon (stale, restarted) are not its.
SELECT EXISTS (
    SELECT 1 FROM provisioner_jobs
    WHERE id = %(id)s AND worker_id = %(worker_id)s AND completed_at IS NOT NULL
      AND failure_class IS DISTINCT FROM 'daemon_lost'
) AS completed;

-- name: fail_earlier_runs
-- A daemon (re)started: the running jobs held by earlier runs of its identity (worker ids `<identity>#<run>`,
-- bound to the same provisioner key when `key_suffix` is given, never key-bound otherwise) fail at once.
UPDATE provisioner_jobs
SET completed_at = %(now)s, updated_at = %(now)s, failure_class = 'daemon_lost',
    error = 'provisioner daemon lost: its daemon ' || %(identity)s::text
            || ' restarted before the job finished (the job was held by ' || worker_id || ')'
WHERE job_status IN ('running', 'canceling')
  AND starts_with(worker_id, %(identity)s::text || '#')
  AND worker_id <> %(worker_id)s
  AND CASE WHEN %(key_suffix)s::text IS NULL THEN strpos(worker_id, '@key:') = 0
           ELSE right(worker_id, length(%(key_suffix)s::text)) = %(key_suffix)s::text END
  AND (%(organization_id)s::uuid IS NULL OR organization_id = %(organization_id)s::uuid)
RETURNING id, type, input, worker_id;

-- name: complete_build
-- `complete`, `workspaces.finish_build`, `workspaces.mark_deleted` and `notify_completed` for a build, in one
-- statement run on its own (autocommit): one round trip. No row, and nothing written, unless the job is a build
-- held by this worker and has its build; the caller then takes the general path. The payload is the one
-- `notify_completed` sends, byte for byte. The build's reason and the job's creation tell the caller whether
-- a claim build ended, and how long after its claim.
WITH job AS (
    UPDATE provisioner_jobs
    SET completed_at = %(now)s, updated_at = %(now)s, error = %(error)s, failure_class = %(failure_class)s
    WHERE id = %(id)s AND worker_id = %(worker_id)s AND completed_at IS NULL AND type = 'workspace_build'
      AND EXISTS (SELECT 1 FROM workspace_builds WHERE job_id = %(id)s)
    RETURNING id, type, job_status, input, created_at
), build AS (
    -- A success stores its state and outputs; a failure stores the state it left, when it reports one.
    UPDATE workspace_builds b
    SET state = %(state)s::bytea,
        outputs = CASE WHEN job.job_status = 'succeeded' THEN %(outputs)s ELSE b.outputs END,
        updated_at = %(now)s
    FROM job
    WHERE b.job_id = job.id AND (job.job_status = 'succeeded' OR %(state)s::bytea IS NOT NULL)
    RETURNING b.workspace_id, b.transition, job.job_status
), deleted AS (
    UPDATE workspaces w SET deleted = true, deleted_at = %(now)s, updated_at = %(now)s
    FROM build
    WHERE w.id = build.workspace_id AND build.transition = 'delete' AND build.job_status = 'succeeded'
      AND NOT w.deleted
)
SELECT job.id, job.job_status, job.created_at,
       (SELECT b.reason FROM workspace_builds b WHERE b.job_id = job.id) AS reason,
       pg_notify('prebuildd_job_completed',
                 format('{"job_id": %%s, "type": %%s, "workspace_id": %%s}', to_json(job.id::text),
                        to_json(job.type), coalesce(to_json(job.input ->> 'workspace_id')::text, 'null')))
FROM job;

-- name: cancel
-- A pending job is canceled outright and never starts; a running one is marked, and its daemon stops it.
UPDATE provisioner_jobs
SET canceled_at = coalesce(canceled_at, %(now)s),
    completed_at = CASE WHEN started_at IS NULL THEN %(now)s ELSE completed_at END,
    updated_at = %(now)s
WHERE id = %(id)s AND completed_at IS NULL
RETURNING id, job_status;

-- name: fail_stale
-- Running jobs with no heartbeat since the cutoff fail as lost-daemon failures (not the template's fault).
UPDATE provisioner_jobs
SET completed_at = %(now)s, updated_at = %(now)s, failure_class = 'daemon_lost',
    error = 'provisioner stopped responding: no heartbeat from ' || coalesce(worker_id, 'its daemon')
            || ' since ' || to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
WHERE job_status IN ('running', 'canceling') AND updated_at < %(cutoff)s
RETURNING id, type, input;

-- name: by_id
-- A job with every column (tests and tools).
SELECT * FROM provisioner_jobs WHERE id = %(id)s;

-- name: logs_after
-- A page of a job's log after a line id (the cursor of log followers).
SELECT id, created_at, level, stage, output FROM provisioner_job_logs
WHERE job_id = %(job_id)s AND id > %(after)s
ORDER BY id
LIMIT %(limit)s;

-- name: notify_completed
-- Wake waiters for a job (the reconciler, log followers) at commit.
SELECT pg_notify('prebuildd_job_completed', %(payload)s::text);

-- name: set_error
-- An import whose result does not fit its manifest: the job fails after all.
UPDATE provisioner_jobs SET error = %(error)s, failure_class = %(failure_class)s, updated_at = %(now)s
WHERE id = %(id)s;

-- name: release
-- A job interrupted by a shutdown goes back to the queue for another daemon.
WITH released AS (
    UPDATE provisioner_jobs SET started_at = NULL, worker_id = NULL, updated_at = %(now)s
    WHERE id = %(id)s AND worker_id = %(worker_id)s AND completed_at IS NULL AND canceled_at IS NULL
    RETURNING id, provisioner, tags
)
SELECT id, pg_notify('prebuildd_job_queued',
                     provisioner || CASE WHEN tags = '{}' THEN ''
                                         WHEN octet_length(tags::text) > 7000 THEN E'\n*'
                                         ELSE E'\n' || tags::text END)
FROM released;
