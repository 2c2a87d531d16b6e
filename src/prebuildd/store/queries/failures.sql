-- name: record_transient
-- One transient creation failure of a preset (one per cycle at most: the reconciler stops at the first).
INSERT INTO preset_failure_trackers (preset_id, consecutive_failures, last_failure_at, last_error)
VALUES (%(preset_id)s, 1, %(now)s, %(error)s)
ON CONFLICT (preset_id) DO UPDATE
SET consecutive_failures = preset_failure_trackers.consecutive_failures + 1,
    last_failure_at = excluded.last_failure_at,
    last_error = excluded.last_error;

-- name: clear_transient
-- Forgets the transient failures of a preset (after a create succeeded).
DELETE FROM preset_failure_trackers WHERE preset_id = %(preset_id)s;

-- name: set_status
-- Stores a preset's prebuild status (healthy or hard_limited), its reason and last error.
UPDATE template_version_presets
SET prebuild_status = %(status)s, prebuild_status_reason = %(reason)s, prebuild_last_error = %(error)s,
    prebuild_status_changed_at = %(now)s, updated_at = %(now)s
WHERE id = %(preset_id)s;
