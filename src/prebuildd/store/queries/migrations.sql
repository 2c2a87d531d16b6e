-- name: lock
-- Serializes migrations across processes starting together (a session lock on the migration connection).
SELECT pg_advisory_lock(%(lock)s);

-- name: unlock
-- Releases the migration lock.
SELECT pg_advisory_unlock(%(lock)s);

-- name: create_table
-- The bookkeeping table of applied migrations, created by the first start.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL
);

-- name: record
-- Marks one migration applied, in the transaction that applied it.
INSERT INTO schema_migrations (version, name, applied_at) VALUES (%(version)s, %(name)s, %(now)s);

-- name: applied
-- The versions already applied, in order.
SELECT version FROM schema_migrations ORDER BY version;

-- name: table_present
-- Whether the bookkeeping table exists (a database prebuildd never migrated has none).
SELECT to_regclass('schema_migrations') IS NOT NULL AS present;
