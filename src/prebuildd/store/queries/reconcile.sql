-- name: take_lease
-- Takes or renews the cycle lease for a holder until the given expiry: when nobody holds it, this holder does,
-- it has expired, or its holder's connection is gone (a killed replica frees it at once; a frozen one keeps
-- its connection and holds it until it expires). Returns whether it is held now, and by whom until when.
WITH me AS (
    SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()
), taken AS (
    INSERT INTO reconcile_leases AS l
        (name, holder, holder_pid, holder_backend_start, acquired_at, renewed_at, expires_at)
    SELECT %(name)s, %(holder)s, me.pid, me.backend_start, %(now)s, %(now)s, %(expires_at)s FROM me
    ON CONFLICT (name) DO UPDATE SET
        holder = excluded.holder,
        holder_pid = excluded.holder_pid,
        holder_backend_start = excluded.holder_backend_start,
        acquired_at = CASE WHEN l.holder = excluded.holder THEN l.acquired_at ELSE excluded.acquired_at END,
        renewed_at = excluded.renewed_at,
        expires_at = excluded.expires_at
    WHERE l.holder = excluded.holder
       OR l.expires_at <= excluded.renewed_at
       OR NOT EXISTS (  -- another role's backend_start reads as NULL without pg_read_all_stats: the pid decides
           SELECT 1 FROM pg_stat_activity a
           WHERE a.pid = l.holder_pid AND coalesce(a.backend_start = l.holder_backend_start, true)
       )
    RETURNING l.holder, l.acquired_at, l.expires_at
)
SELECT true AS held, holder, acquired_at, expires_at FROM taken
UNION ALL
SELECT false AS held, l.holder, l.acquired_at, l.expires_at FROM reconcile_leases l
WHERE l.name = %(name)s AND NOT EXISTS (SELECT 1 FROM taken);

-- name: release_lease
-- Gives the cycle lease back at the end of a cycle (no row: another replica had taken it over).
DELETE FROM reconcile_leases WHERE name = %(name)s AND holder = %(holder)s;

-- name: settings
-- The global settings row (is reconciliation paused).
SELECT reconciliation_paused, updated_at FROM settings;

-- name: snapshot_settings
-- The settings row and the queue depth (pending jobs, the oldest one's creation), first statement of the snapshot
-- transaction, which it also bounds: a replica frozen inside it has its session ended after the given idle time
-- instead of holding its snapshot (and table locks) for ever.
SELECT reconciliation_paused, updated_at,
       set_config('idle_in_transaction_session_timeout', %(idle_timeout)s, true) AS idle_timeout,
       q.pending, q.oldest
FROM settings
CROSS JOIN (
    SELECT count(*) AS pending, min(created_at) AS oldest FROM provisioner_jobs WHERE job_status = 'pending'
) q;

-- name: snapshot_prebuilds
-- The latest build of every prebuild of the given presets, with its job: the pools that act or have failures
-- (snapshot_presets counts the others). The one source for running, starting, leftovers and failures.
SELECT lb.workspace_id, lb.workspace_created_at, lb.preset_id, lb.template_version_id AS version_id,
       lb.transition, lb.job_id, lb.job_status, lb.build_created_at, lb.job_started_at, lb.job_completed_at,
       lb.failure_class, lb.job_error AS error,
       coalesce(ag.all_ready, true) AS ready,
       CASE WHEN lb.transition = 'start' AND lb.job_status = 'succeeded' THEN greatest(lb.job_completed_at, ag.ready_at)
       END AS ready_at
FROM workspace_latest_builds lb
LEFT JOIN LATERAL (  -- one probe of the agents per prebuild: are they all ready, and since when
    SELECT bool_and(a.lifecycle = 'ready') AS all_ready, max(a.ready_at) AS ready_at
    FROM workspace_agents a WHERE a.workspace_id = lb.workspace_id
) ag ON true
WHERE lb.owner_id = %(prebuilds_user_id)s AND lb.preset_id = ANY(%(preset_ids)s::uuid[]);

-- name: snapshot_creations
-- The newest creations of the given presets (the first build of each of their prebuilds, whoever owns it now
-- and even if deleted): a claimed success still counts as a success in the failure maths. Columns in the order
-- of PrebuildRow.
SELECT c.workspace_id, c.workspace_created_at, c.preset_id, c.version_id, c.transition, c.job_id, c.job_status,
       c.build_created_at, c.job_started_at, c.job_completed_at, c.failure_class, c.error, true AS ready
FROM unnest(%(preset_ids)s::uuid[], %(keep)s::int[]) AS p (id, keep)
CROSS JOIN LATERAL (
    SELECT b.workspace_id, w.created_at AS workspace_created_at, b.preset_id, b.template_version_id AS version_id,
           b.transition, j.id AS job_id, j.job_status, b.created_at AS build_created_at,
           j.started_at AS job_started_at, j.completed_at AS job_completed_at, j.failure_class, j.error
    FROM workspace_builds b
    JOIN workspaces w ON w.id = b.workspace_id
    JOIN provisioner_jobs j ON j.id = b.job_id
    WHERE b.preset_id = p.id AND b.build_number = 1 AND b.reason = 'prebuild'
    ORDER BY b.created_at DESC
    LIMIT p.keep
) c;

-- name: snapshot_presets
-- Presets with a pool on active versions, plus any preset that still has prebuilds (old versions included), each
-- with its pool aggregated (one statement whatever the number of presets or prebuilds). Columns in the order of
-- PresetRow, then the pool's.
SELECT p.id AS preset_id, p.name AS preset_name, t.id AS template_id, t.name AS template_name,
       t.organization_id, v.id AS version_id, v.name AS version_name,
       (t.active_version_id = v.id AND NOT t.deleted AND t.deprecated_at IS NULL) AS active,
       p.desired_instances, p.ttl_seconds, p.scheduling_timezone AS timezone,
       s.schedules,  -- NULL without schedules: nothing to parse for most presets
       p.last_invalidated_at, p.failures_reset_at, p.prebuild_status,
       coalesce(f.consecutive_failures, 0) AS consecutive_failures, f.last_failure_at,
       coalesce(f.last_error, '') AS last_error,
       p.autoscale, p.target_expression, a.target AS autoscale_target, a.raised_at AS autoscale_raised_at,
       a.changed_at AS autoscale_changed_at, o.name AS organization_name,
       coalesce(g.running, 0) AS pool_running, coalesce(g.ready, 0) AS pool_ready,
       (coalesce(g.needs_rows, false)
        OR coalesce(g.oldest < p.last_invalidated_at, false)
        OR coalesce(p.ttl_seconds > 0
                    AND g.oldest < %(now)s::timestamptz - make_interval(secs => p.ttl_seconds), false))
           AS pool_needs_rows,
       coalesce(g.pool_inflight, 0) AS pool_inflight, g.fingerprint AS pool_fingerprint,
       coalesce(g.inflight, 0) AS inflight
FROM template_version_presets p
JOIN template_versions v ON v.id = p.template_version_id
JOIN templates t ON t.id = v.template_id
JOIN organizations o ON o.id = t.organization_id
LEFT JOIN preset_failure_trackers f ON f.preset_id = p.id
LEFT JOIN preset_autoscale_state a ON a.template_id = t.id AND a.preset_name = p.name
LEFT JOIN (
    -- Each pool aggregated from the latest build of each of its prebuilds: its running prebuilds (how many have
    -- every agent ready, and the oldest one's creation, which the outer query holds against the preset's
    -- invalidation and TTL), whether any prebuild needs its row read (anything but a running prebuild whose time
    -- to ready is recorded), its jobs in flight, and a fingerprint of its rows (every latest build's job with its
    -- status, its agents' state and whether its time to ready is recorded: the reader reuses the rows it read
    -- last while that is unchanged). Every row carries the prebuild jobs in flight across all pools (the pacing
    -- budget). Agents and recorded ready times are hash-joined (a probe per prebuild cost twice as much).
    SELECT b.preset_id,
           count(*) FILTER (WHERE b.transition = 'start' AND j.job_status = 'succeeded') AS running,
           count(*) FILTER (
               WHERE b.transition = 'start' AND j.job_status = 'succeeded' AND ag.all_ready IS NOT FALSE
           ) AS ready,
           min(w.created_at) FILTER (WHERE b.transition = 'start' AND j.job_status = 'succeeded') AS oldest,
           bool_or(
               b.transition <> 'start' OR j.job_status <> 'succeeded'
               OR (rt.workspace_id IS NULL AND ag.all_ready IS NOT FALSE
                   AND greatest(j.completed_at, ag.ready_at) > %(now)s::timestamptz - interval '35 days')
           ) AS needs_rows,
           count(*) FILTER (WHERE j.job_status IN ('pending', 'running', 'canceling')) AS pool_inflight,
           bit_xor(
               uuid_hash_extended(j.id, hashtext(j.job_status)::bigint * 16 + (rt.workspace_id IS NULL)::int)
               # coalesce(ag.state, 0)
           ) AS fingerprint,
           sum(count(*) FILTER (WHERE j.job_status IN ('pending', 'running', 'canceling'))) OVER () AS inflight
    FROM workspaces w
    JOIN workspace_builds b ON b.workspace_id = w.id AND b.build_number = w.latest_build_number
    JOIN provisioner_jobs j ON j.id = b.job_id
    LEFT JOIN (
        SELECT a.workspace_id, bool_and(a.lifecycle = 'ready') AS all_ready, max(a.ready_at) AS ready_at,
               bit_xor(uuid_hash_extended(a.id, hashtext(a.lifecycle))
                       # coalesce(timestamp_hash_extended(a.ready_at AT TIME ZONE 'UTC', 0), 0)) AS state
        FROM workspace_agents a GROUP BY a.workspace_id
    ) ag ON ag.workspace_id = w.id
    LEFT JOIN prebuild_ready_times rt ON rt.workspace_id = w.id
    WHERE w.owner_id = %(prebuilds_user_id)s AND NOT w.deleted
    GROUP BY b.preset_id
) g ON g.preset_id = p.id
LEFT JOIN LATERAL (
    SELECT json_agg(json_build_object('cron', sc.cron, 'instances', sc.desired_instances) ORDER BY sc.position)
           AS schedules
    FROM template_version_preset_schedules sc WHERE sc.preset_id = p.id
) s ON true
WHERE (p.desired_instances IS NOT NULL AND t.active_version_id = v.id AND NOT t.deleted)
   OR p.id IN (
       SELECT DISTINCT b.preset_id
       FROM workspaces w
       JOIN workspace_builds b ON b.workspace_id = w.id AND b.build_number = w.latest_build_number
       WHERE w.owner_id = %(prebuilds_user_id)s AND NOT w.deleted AND b.preset_id IS NOT NULL
   )
ORDER BY t.name, v.created_at, p.name;

-- name: lock_preset
-- Serialises creates of one preset across replicas for the rest of the transaction. The wait for the lock is
-- bounded (lock_timeout), and so is the time this transaction may then sit idle holding it (a frozen replica's
-- session is ended by the server), so that no replica waits on a frozen one for long. set_config runs first.
SELECT set_config('lock_timeout', %(lock_timeout)s, true) AS lock_timeout,
       set_config('idle_in_transaction_session_timeout', %(idle_timeout)s, true) AS idle_timeout,
       pg_advisory_xact_lock(hashtextextended(%(preset_id)s::text, 7)) AS locked;

-- name: bound_waits
-- Bounds this transaction's lock waits and the time it may sit idle holding its locks (see lock_preset).
SELECT set_config('lock_timeout', %(lock_timeout)s, true) AS lock_timeout,
       set_config('idle_in_transaction_session_timeout', %(idle_timeout)s, true) AS idle_timeout;

-- name: count_pool
-- Valid running plus starting prebuilds of one preset, re-read under its lock just before a create.
SELECT
    count(*) FILTER (WHERE b.transition = 'start' AND j.job_status IN ('pending', 'running', 'canceling'))
        AS starting,
    count(*) FILTER (
        WHERE b.transition = 'start' AND j.job_status = 'succeeded'
          AND (%(invalidated_at)s::timestamptz IS NULL OR w.created_at >= %(invalidated_at)s::timestamptz)
          AND (%(ttl_seconds)s::int = 0 OR w.created_at >= %(now)s::timestamptz - make_interval(secs => %(ttl_seconds)s::int))
    ) AS running_valid
FROM workspaces w
JOIN workspace_builds b ON b.workspace_id = w.id AND b.build_number = w.latest_build_number
JOIN provisioner_jobs j ON j.id = b.job_id
WHERE w.pool_preset_id = %(preset_id)s AND NOT w.deleted AND w.owner_id = %(prebuilds_user_id)s
  AND b.preset_id = %(preset_id)s;

-- name: insert_events
-- Records a batch of events in one statement.
INSERT INTO events (created_at, kind, organization_id, template_id, preset_id, workspace_id, message, data)
SELECT %(now)s, e.kind, e.organization_id, e.template_id, e.preset_id, e.workspace_id, e.message, e.data
FROM unnest(%(kinds)s::text[], %(organization_ids)s::uuid[], %(template_ids)s::uuid[], %(preset_ids)s::uuid[],
            %(workspace_ids)s::uuid[], %(messages)s::text[], %(datas)s::jsonb[])
     AS e (kind, organization_id, template_id, preset_id, workspace_id, message, data);

-- name: prune_events
-- Deletes events older than the retention.
DELETE FROM events WHERE created_at < %(before)s;

-- name: snapshot_demand
-- Demand of the given pools (template id + preset name; a pool with no record has no row) in one statement,
-- aggregated in SQL: claims and misses
-- per window (5..120 min) and over the last day, the first record (how much history there is), the same part of
-- the week in the four past weeks and the same time of day in the seven past days (the next 15 and 60 minutes,
-- summed over weeks or days), the p90 time to ready of
-- the 20 newest prebuilds of the last week (and their mean), and the busy minutes of the burst lookback (the
-- minutes with at least burst_minute claims plus misses, newest first, at most burst_limit: bursts are learnt
-- from them).
SELECT p.template_id, p.preset_name,
       coalesce(d.claims_5m, 0) AS claims_5m, coalesce(d.claims_10m, 0) AS claims_10m,
       coalesce(d.claims_30m, 0) AS claims_30m, coalesce(d.claims_60m, 0) AS claims_60m,
       coalesce(d.claims_120m, 0) AS claims_120m,
       coalesce(d.misses_5m, 0) AS misses_5m, coalesce(d.misses_10m, 0) AS misses_10m,
       coalesce(d.misses_30m, 0) AS misses_30m, coalesce(d.misses_60m, 0) AS misses_60m,
       coalesce(d.misses_120m, 0) AS misses_120m,
       coalesce(d.day, 0) AS day, coalesce(d.claims_hour, 0) AS claims_hour,
       (SELECT min(f.at) FROM preset_demand f
        WHERE f.template_id = p.template_id AND f.preset_name = p.preset_name) AS first_at,
       w.next_15m AS weekly_next_15m, w.next_60m AS weekly_next_60m,
       y.next_15m AS daily_next_15m, y.next_60m AS daily_next_60m,
       r.p90 AS ready_p90_seconds, r.mean AS ready_mean_seconds, coalesce(r.samples, 0) AS ready_samples,
       u.minutes AS busy_minutes, u.counts AS busy_counts
FROM (
    -- The pools of the given templates (their presets' names, every version) with demand records: the others
    -- (most of them, at scale) cost one index probe each. Templates, not pools, are passed: a tenth of the
    -- parameters to send at scale, and the caller reads only the pools it asked for.
    SELECT DISTINCT v.template_id, k.name AS preset_name
    FROM template_versions v
    JOIN template_version_presets k ON k.template_version_id = v.id
    WHERE v.template_id = ANY(%(template_ids)s::uuid[])
      AND EXISTS (SELECT 1 FROM preset_demand e WHERE e.template_id = v.template_id AND e.preset_name = k.name)
) p
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE kind = 'claim' AND at > %(now)s::timestamptz - interval '5 minutes') AS claims_5m,
           count(*) FILTER (WHERE kind = 'claim' AND at > %(now)s::timestamptz - interval '10 minutes') AS claims_10m,
           count(*) FILTER (WHERE kind = 'claim' AND at > %(now)s::timestamptz - interval '30 minutes') AS claims_30m,
           count(*) FILTER (WHERE kind = 'claim' AND at > %(now)s::timestamptz - interval '60 minutes') AS claims_60m,
           count(*) FILTER (WHERE kind = 'claim' AND at > %(now)s::timestamptz - interval '120 minutes') AS claims_120m,
           count(*) FILTER (WHERE kind = 'miss' AND at > %(now)s::timestamptz - interval '5 minutes') AS misses_5m,
           count(*) FILTER (WHERE kind = 'miss' AND at > %(now)s::timestamptz - interval '10 minutes') AS misses_10m,
           count(*) FILTER (WHERE kind = 'miss' AND at > %(now)s::timestamptz - interval '30 minutes') AS misses_30m,
           count(*) FILTER (WHERE kind = 'miss' AND at > %(now)s::timestamptz - interval '60 minutes') AS misses_60m,
           count(*) FILTER (WHERE kind = 'miss' AND at > %(now)s::timestamptz - interval '120 minutes') AS misses_120m,
           count(*) FILTER (WHERE kind = 'claim' AND at > %(now)s::timestamptz - interval '60 minutes') AS claims_hour,
           count(*) AS day
    FROM preset_demand d
    WHERE d.template_id = p.template_id AND d.preset_name = p.preset_name
      AND d.at > %(now)s::timestamptz - interval '1 day' AND d.at <= %(now)s::timestamptz
) d ON true
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE d.at < k.start + interval '15 minutes') AS next_15m, count(*) AS next_60m
    FROM generate_series(1, 4) AS g (n)
    CROSS JOIN LATERAL (SELECT %(now)s::timestamptz - g.n * interval '7 days' AS start) k
    JOIN preset_demand d ON d.template_id = p.template_id AND d.preset_name = p.preset_name
         AND d.at >= k.start AND d.at < k.start + interval '60 minutes'
) w ON true
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE d.at < k.start + interval '15 minutes') AS next_15m, count(*) AS next_60m
    FROM generate_series(1, 7) AS g (n)
    CROSS JOIN LATERAL (SELECT %(now)s::timestamptz - g.n * interval '1 day' AS start) k
    JOIN preset_demand d ON d.template_id = p.template_id AND d.preset_name = p.preset_name
         AND d.at >= k.start AND d.at < k.start + interval '60 minutes'
) y ON true
LEFT JOIN LATERAL (
    SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM t.ready_at - t.created_at)) AS p90,
           avg(extract(epoch FROM t.ready_at - t.created_at)) AS mean, count(*) AS samples
    FROM (
        SELECT rt.ready_at, rt.created_at FROM prebuild_ready_times rt
        WHERE rt.template_id = p.template_id AND rt.preset_name = p.preset_name
          AND rt.ready_at > %(now)s::timestamptz - interval '7 days'
        ORDER BY rt.ready_at DESC LIMIT 20
    ) t
) r ON true
LEFT JOIN LATERAL (
    SELECT array_agg(b.minute ORDER BY b.minute) AS minutes, array_agg(b.n ORDER BY b.minute) AS counts
    FROM (
        SELECT date_bin(interval '1 minute', d.at, timestamptz 'epoch') AS minute, count(*) AS n
        FROM preset_demand d
        WHERE d.template_id = p.template_id AND d.preset_name = p.preset_name
          AND d.at > %(now)s::timestamptz - make_interval(secs => %(burst_seconds)s::int)
          AND d.at <= %(now)s::timestamptz
        GROUP BY 1 HAVING count(*) >= %(burst_minute)s::int
        ORDER BY 1 DESC LIMIT %(burst_limit)s::int
    ) b
) u ON true;

-- name: record_ready_times
-- Records the time to ready of prebuilds newly seen eligible (a prebuild already recorded keeps its first time).
INSERT INTO prebuild_ready_times (workspace_id, template_id, preset_name, created_at, ready_at)
SELECT * FROM unnest(%(workspace_ids)s::uuid[], %(template_ids)s::uuid[], %(preset_names)s::text[],
                     %(created_ats)s::timestamptz[], %(ready_ats)s::timestamptz[])
ON CONFLICT (workspace_id) DO NOTHING;

-- name: prune_demand
-- Deletes demand records and ready times older than the retention (35 days).
WITH gone AS (DELETE FROM preset_demand WHERE at < %(before)s)
DELETE FROM prebuild_ready_times WHERE ready_at < %(before)s;

-- name: save_autoscale_states
-- Stores the autoscaler's decisions that changed (target, when it last rose, when it last changed).
INSERT INTO preset_autoscale_state (template_id, preset_name, target, raised_at, changed_at)
SELECT * FROM unnest(%(template_ids)s::uuid[], %(preset_names)s::text[], %(targets)s::int[],
                     %(raised_ats)s::timestamptz[], %(changed_ats)s::timestamptz[])
ON CONFLICT (template_id, preset_name) DO UPDATE SET
    target = excluded.target, raised_at = excluded.raised_at, changed_at = excluded.changed_at;
