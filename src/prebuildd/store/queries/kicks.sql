-- name: kick
-- Ask the reconciler of another process (the server's, when API workers run apart from it) to run a cycle now.
SELECT pg_notify('prebuildd_reconcile_kick', %(reason)s::text);
