-- name: set_utc
-- Every timestamp is passed in as a parameter; the session time zone is pinned so that what is read back compares
-- equal to what the clock produced.
SET TIME ZONE 'UTC';
