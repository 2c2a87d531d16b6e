-- A job whose daemon stopped responding (failed as stale) or restarted while running it fails as `daemon_lost`:
-- nothing the template did, so it neither counts as a build failure nor backs the preset off on its own.
ALTER TABLE provisioner_jobs DROP CONSTRAINT provisioner_jobs_failure_class_check;
ALTER TABLE provisioner_jobs ADD CONSTRAINT provisioner_jobs_failure_class_check
    CHECK (failure_class IN ('build', 'config', 'infrastructure', 'daemon_lost'));
