"""PostgreSQL: connection pool, transactions, locks, migrations, and the named queries in `queries/*.sql`."""
