-- The reconcile cycle lease (lock liveness): which replica is running a cycle, until when, and which
-- backend holds it. It replaces the session advisory lock, which a frozen (SIGSTOP) or half-open replica held for
-- as long as its connection lived. A lease expires; a lease whose holder's connection is gone (the replica was
-- killed) is free at once. One row per lease name; no row means nobody holds it.
CREATE TABLE reconcile_leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    holder_pid integer NOT NULL,
    holder_backend_start timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL,
    renewed_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
