-- Pool-size history for the dashboard's sparklines: a preset's desired, running and eligible counts as the
-- reconciler saw them. Written by the reconciler in one statement per cycle, only for pools whose counts changed
-- (and for every pool at least every ten minutes, so a steady pool still has recent samples); kept
-- --pool-history-retention (7 days by default) and pruned by the reconciler. Keyed by template and preset *name*
-- like the demand data of 0007: a push makes new preset rows, and a pool's history must survive a new version.
CREATE TABLE pool_size_samples (
    template_id uuid NOT NULL,
    preset_name text NOT NULL,
    at timestamptz NOT NULL,
    desired integer NOT NULL,
    running integer NOT NULL,
    eligible integer NOT NULL,
    PRIMARY KEY (template_id, preset_name, at)
);
CREATE INDEX pool_size_samples_at ON pool_size_samples (at);

-- How long each claim took, for the dashboard's claim-latency histogram: the server's time from the request to
-- the end of the claim statement (the wait before the statement, passed in, plus the statement's own time).
-- NULL for misses and for claims recorded before this column.
ALTER TABLE preset_demand ADD COLUMN latency_ms double precision;
