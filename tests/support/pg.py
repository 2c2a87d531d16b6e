"""The tests' PostgreSQL: an embedded server, a migrated template database, a clone per test."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg

from prebuildd.server.embedded_pg import EmbeddedPostgres

TEMPLATE_DB = "prebuildd_template"


@dataclass
class PgServer:
    embedded: EmbeddedPostgres
    admin_url: str

    def url(self, database: str) -> str:
        return self.embedded.url(database)

    def create_database(self, template: str = TEMPLATE_DB) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')  # type: ignore[arg-type]
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
