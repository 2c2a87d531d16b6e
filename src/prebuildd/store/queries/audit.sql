-- The audit log (``store.audit``). Entries are only inserted, read and pruned; never updated.

-- name: insert_entry
-- Records one audited action (in the action's transaction when it succeeded, on its own when it did not).
INSERT INTO audit_log (
    at, actor_id, actor_name, token_id, organization_id, action, object_type, object_id, object_name,
    outcome, error_code, error_message, detail, request_id, source_ip
) VALUES (
    %(at)s, %(actor_id)s, %(actor_name)s, %(token_id)s, %(organization_id)s, %(action)s, %(object_type)s,
    %(object_id)s, %(object_name)s, %(outcome)s, %(error_code)s, %(error_message)s, %(detail)s,
    %(request_id)s, %(source_ip)s
)
RETURNING id;

-- name: entries
-- Entries newest first, filtered (a NULL filter is no filter; ``action_prefix`` matches 'template.' and below),
-- before the cursor id, and only of the given organizations when ``organization_ids`` is not NULL.
SELECT id, at, actor_id, actor_name, token_id, organization_id, action, object_type, object_id, object_name,
       outcome, error_code, error_message, detail, request_id, source_ip
FROM audit_log
WHERE (%(before)s::bigint IS NULL OR id < %(before)s)
  AND (%(actor)s::text IS NULL OR lower(actor_name) = lower(%(actor)s) OR actor_id::text = %(actor)s)
  AND (%(action)s::text IS NULL OR action = %(action)s)
  AND (%(action_prefix)s::text IS NULL OR starts_with(action, %(action_prefix)s))
  AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)
  AND (%(object)s::text IS NULL OR object_name = %(object)s OR object_id = %(object)s)
  AND (%(outcome)s::text IS NULL OR outcome = %(outcome)s)
  AND (%(organization_ids)s::uuid[] IS NULL OR organization_id = ANY(%(organization_ids)s))
ORDER BY id DESC
LIMIT %(limit)s;

-- name: prune
-- Deletes at most ``batch`` entries older than the retention (the oldest first); returns how many it deleted.
WITH doomed AS (
    SELECT id FROM audit_log WHERE at < %(before)s ORDER BY at LIMIT %(batch)s
)
DELETE FROM audit_log WHERE id IN (SELECT id FROM doomed);
