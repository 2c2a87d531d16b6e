"""Composition: the `prebuildd server` process (database, migrations, daemons, loops, HTTP), the embedded
PostgreSQL, and the demo. The only package that wires every other one together."""
