"""PostgreSQL: the connection pool, transactions, locks, migrations, the named queries in `queries/*.sql`, and
one typed repository module per concept (the only code that knows query names and rows)."""
