"""The dashboard in process: the API app with the dashboard installed, over the test's own database, clock and
queue (no server process), for tests that drive the pages over plain HTTP."""

from __future__ import annotations

from fastapi import FastAPI

from prebuildd.api.app import create_app
from prebuildd.api.context import Services
from prebuildd.dashboard.app import install_dashboard
from prebuildd.runtime.config import ServerConfig
from prebuildd.store import channels
from prebuildd.store.listener import Listener
from tests.support.env import Env

FAILING_IMPORT = """
provisioner = "echo"
[echo.import]
result = "failure"
error = "import script: exit 3"
logs = ["checking the manifest", "exit 3"]
"""
"""A template whose import fails, with a log: its error and log are for template admins only."""

WARNING = """
provisioner = "echo"
[[parameters]]
name = "repo"
type = "string"
[[presets]]
name = "warm"
[presets.prebuilds]
instances = 1
"""
"""A template that imports with a warning (a preset leaves a required parameter unset)."""


def dashboard_app(env: Env) -> tuple[Services, FastAPI]:
    services = Services(
        config=ServerConfig(postgres_url=env.db.url, data_dir=env.tmp, provisioner_daemons=0),
        clock=env.clock,
        db=env.db,
        listener=Listener(env.db, channels.ALL),
        queue=env.queue,
        builder=env.builder,
    )
    app = create_app(services)
    install_dashboard(app, services)
    return services, app
