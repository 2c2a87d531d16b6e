"""Names of the NOTIFY channels (the SQL files use the same literals)."""

JOB_QUEUED = "prebuildd_job_queued"
JOB_COMPLETED = "prebuildd_job_completed"
JOB_LOGS = "prebuildd_job_logs"
WORKSPACE_CLAIMED = "prebuildd_workspace_claimed"
RECONCILE_KICK = "prebuildd_reconcile_kick"
ALL = (JOB_QUEUED, JOB_COMPLETED, JOB_LOGS, WORKSPACE_CLAIMED, RECONCILE_KICK)
