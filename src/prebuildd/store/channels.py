"""Names of the NOTIFY channels (the SQL files use the same literals)."""

JOB_QUEUED = "prebuildd_job_queued"
JOB_COMPLETED = "prebuildd_job_completed"
JOB_LOGS = "prebuildd_job_logs"
WORKSPACE_CLAIMED = "prebuildd_workspace_claimed"
ALL = (JOB_QUEUED, JOB_COMPLETED, JOB_LOGS, WORKSPACE_CLAIMED)
