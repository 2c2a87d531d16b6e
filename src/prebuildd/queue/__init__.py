"""The job queue: the port daemons use, its PostgreSQL adapter, its HTTP adapter for standalone daemons, and the
operator reads of jobs. The port and the HTTP adapter import no database driver."""
