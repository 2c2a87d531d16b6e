-- The first schema of prebuildd: tenants, users, templates, presets, workspaces, builds, the job queue,
-- settings and events. Timestamps are always written from the application's clock: no now() here.

CREATE TABLE organizations (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9-]*$'),
    display_name text NOT NULL DEFAULT '',
    is_default boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX organizations_one_default ON organizations (is_default) WHERE is_default;

CREATE TABLE users (
    id uuid PRIMARY KEY,
    username text NOT NULL,
    email text NOT NULL DEFAULT '',
    role text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'template-admin', 'member')),
    is_system boolean NOT NULL DEFAULT false,
    suspended boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX users_username ON users (lower(username));

CREATE TABLE organization_members (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, user_id)
);

-- The built-in user that owns every unclaimed prebuild. Its id is fixed so that every replica agrees on it.
INSERT INTO users (id, username, role, is_system, created_at, updated_at)
VALUES ('00000000-0000-4000-8000-0000000b01d0', 'prebuilds', 'member', true,
        '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');

CREATE TABLE api_tokens (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name text NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    last_used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE provisioner_keys (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name text NOT NULL,
    key_hash bytea NOT NULL UNIQUE,
    tags jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE UNIQUE INDEX provisioner_keys_name ON provisioner_keys (organization_id, lower(name)) WHERE revoked_at IS NULL;

CREATE TABLE templates (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id),
    name text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]*$'),
    display_name text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    active_version_id uuid,
    deprecation_message text,
    deprecated_at timestamptz,
    deleted boolean NOT NULL DEFAULT false,
    deleted_at timestamptz,
    created_by uuid REFERENCES users (id),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX templates_name ON templates (organization_id, lower(name)) WHERE NOT deleted;

CREATE TABLE provisioner_jobs (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id),
    type text NOT NULL CHECK (type IN ('template_version_import', 'workspace_build')),
    provisioner text NOT NULL,
    tags jsonb NOT NULL DEFAULT '{}',
    priority smallint NOT NULL DEFAULT 0,
    input jsonb NOT NULL DEFAULT '{}',
    initiator_id uuid REFERENCES users (id),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    started_at timestamptz,
    canceled_at timestamptz,
    completed_at timestamptz,
    error text,
    failure_class text CHECK (failure_class IN ('build', 'config', 'infrastructure')),
    worker_id text,
    job_status text GENERATED ALWAYS AS (
        CASE
            WHEN completed_at IS NOT NULL THEN
                CASE
                    WHEN coalesce(error, '') <> '' THEN 'failed'
                    WHEN canceled_at IS NOT NULL THEN 'canceled'
                    ELSE 'succeeded'
                END
            ELSE
                CASE
                    WHEN coalesce(error, '') <> '' THEN 'failed'
                    WHEN canceled_at IS NOT NULL THEN 'canceling'
                    WHEN started_at IS NULL THEN 'pending'
                    ELSE 'running'
                END
        END
    ) STORED
);
-- The queue: only pending jobs, in the order daemons take them.
CREATE INDEX provisioner_jobs_pending ON provisioner_jobs (priority, created_at) WHERE job_status = 'pending';
-- Stale-job detection scans only running jobs.
CREATE INDEX provisioner_jobs_running ON provisioner_jobs (updated_at) WHERE job_status IN ('running', 'canceling');

CREATE TABLE provisioner_job_logs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id uuid NOT NULL REFERENCES provisioner_jobs (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    level text NOT NULL CHECK (level IN ('trace', 'debug', 'info', 'warn', 'error')),
    stage text NOT NULL DEFAULT '',
    output text NOT NULL
);
CREATE INDEX provisioner_job_logs_job ON provisioner_job_logs (job_id, id);

CREATE TABLE template_versions (
    id uuid PRIMARY KEY,
    template_id uuid NOT NULL REFERENCES templates (id),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    name text NOT NULL,
    message text NOT NULL DEFAULT '',
    provisioner text NOT NULL,
    manifest text NOT NULL,
    source bytea NOT NULL,
    source_hash text NOT NULL,
    tags jsonb NOT NULL DEFAULT '{}',
    agents jsonb NOT NULL DEFAULT '[]',
    warnings jsonb NOT NULL DEFAULT '[]',
    activate_on_import boolean NOT NULL DEFAULT false,
    job_id uuid NOT NULL UNIQUE REFERENCES provisioner_jobs (id),
    created_by uuid REFERENCES users (id),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (template_id, name)
);
ALTER TABLE templates
    ADD CONSTRAINT templates_active_version FOREIGN KEY (active_version_id) REFERENCES template_versions (id);

CREATE TABLE template_version_parameters (
    template_version_id uuid NOT NULL REFERENCES template_versions (id) ON DELETE CASCADE,
    name text NOT NULL,
    position integer NOT NULL,
    spec jsonb NOT NULL,
    PRIMARY KEY (template_version_id, name)
);

CREATE TABLE template_version_presets (
    id uuid PRIMARY KEY,
    template_version_id uuid NOT NULL REFERENCES template_versions (id) ON DELETE CASCADE,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    parameters jsonb NOT NULL DEFAULT '{}',
    desired_instances integer CHECK (desired_instances >= 0),
    ttl_seconds integer NOT NULL DEFAULT 0 CHECK (ttl_seconds >= 0),
    scheduling_timezone text NOT NULL DEFAULT 'UTC',
    prebuild_status text NOT NULL DEFAULT 'healthy' CHECK (prebuild_status IN ('healthy', 'hard_limited')),
    prebuild_status_reason text CHECK (prebuild_status_reason IN ('config', 'build')),
    prebuild_last_error text,
    prebuild_status_changed_at timestamptz,
    last_invalidated_at timestamptz,
    failures_reset_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (template_version_id, name)
);
CREATE INDEX template_version_presets_pools ON template_version_presets (template_version_id)
    WHERE desired_instances IS NOT NULL;

CREATE TABLE template_version_preset_schedules (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    preset_id uuid NOT NULL REFERENCES template_version_presets (id) ON DELETE CASCADE,
    position integer NOT NULL,
    cron text NOT NULL,
    desired_instances integer NOT NULL CHECK (desired_instances >= 0),
    UNIQUE (preset_id, position)
);

-- Transient creation failures (SPEC 6.2), kept here so that every replica and every restart sees them.
CREATE TABLE preset_failure_trackers (
    preset_id uuid PRIMARY KEY REFERENCES template_version_presets (id) ON DELETE CASCADE,
    consecutive_failures integer NOT NULL CHECK (consecutive_failures > 0),
    last_failure_at timestamptz NOT NULL,
    last_error text NOT NULL DEFAULT ''
);

CREATE TABLE workspaces (
    id uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id),
    owner_id uuid NOT NULL REFERENCES users (id),
    template_id uuid NOT NULL REFERENCES templates (id),
    name text NOT NULL CHECK (name ~ '^[a-zA-Z0-9][a-zA-Z0-9_-]*$'),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    claimed_at timestamptz,
    deleted boolean NOT NULL DEFAULT false,
    deleted_at timestamptz
);
CREATE UNIQUE INDEX workspaces_owner_name ON workspaces (owner_id, lower(name)) WHERE NOT deleted;
CREATE INDEX workspaces_template ON workspaces (template_id) WHERE NOT deleted;

CREATE TABLE workspace_builds (
    id uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id),
    build_number integer NOT NULL CHECK (build_number > 0),
    transition text NOT NULL CHECK (transition IN ('start', 'stop', 'delete')),
    template_version_id uuid NOT NULL REFERENCES template_versions (id),
    preset_id uuid REFERENCES template_version_presets (id) ON DELETE SET NULL,
    parameters jsonb NOT NULL DEFAULT '{}',
    state bytea,
    outputs jsonb NOT NULL DEFAULT '{}',
    initiator_id uuid NOT NULL REFERENCES users (id),
    reason text NOT NULL CHECK (reason IN ('initiator', 'prebuild', 'claim', 'orphan_delete', 'cleanup')),
    job_id uuid NOT NULL UNIQUE REFERENCES provisioner_jobs (id),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (workspace_id, build_number)
);
CREATE INDEX workspace_builds_preset ON workspace_builds (preset_id, created_at DESC);

-- For each live workspace, its newest build with the status of that build's job. LATERAL (rather than
-- DISTINCT ON over all builds) lets filters on the workspace, such as its owner, reach the index.
CREATE VIEW workspace_latest_builds AS
SELECT
    w.id AS workspace_id,
    w.organization_id,
    w.owner_id,
    w.template_id,
    w.name AS workspace_name,
    w.created_at AS workspace_created_at,
    b.id AS build_id,
    b.build_number,
    b.transition,
    b.template_version_id,
    b.preset_id,
    b.reason,
    b.created_at AS build_created_at,
    j.id AS job_id,
    j.job_status,
    j.error AS job_error,
    j.failure_class,
    j.started_at AS job_started_at,
    j.completed_at AS job_completed_at
FROM workspaces w
CROSS JOIN LATERAL (
    SELECT * FROM workspace_builds wb
    WHERE wb.workspace_id = w.id
    ORDER BY wb.build_number DESC
    LIMIT 1
) b
JOIN provisioner_jobs j ON j.id = b.job_id
WHERE NOT w.deleted;

CREATE TABLE settings (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    reconciliation_paused boolean NOT NULL DEFAULT false,
    updated_at timestamptz,
    updated_by uuid REFERENCES users (id)
);
INSERT INTO settings (id) VALUES (true);

CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL,
    kind text NOT NULL,
    organization_id uuid,
    template_id uuid,
    preset_id uuid,
    workspace_id uuid,
    user_id uuid,
    message text NOT NULL DEFAULT '',
    data jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_created ON events (created_at);
CREATE INDEX events_preset ON events (preset_id, created_at) WHERE preset_id IS NOT NULL;
