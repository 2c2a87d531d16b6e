"""`prebuildd server --demo`: push the example `exec` template so a new user has something to build at once."""

from __future__ import annotations

from pathlib import Path

import structlog

from prebuildd.services import Services
from prebuildd.store.db import fetch_one
from prebuildd.templates.archive import pack_directory
from prebuildd.templates.versions import push_version

log = structlog.get_logger(__name__)

DEMO_TEMPLATE = "local-workspace"


def examples_dir() -> Path:
    """The example templates: packaged with the wheel, or at the top of a source checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_examples", package.parent.parent / "examples"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "the example templates are not installed (looked in prebuildd/_examples and examples/)"
    )


async def install_demo(services: Services) -> None:
    async with services.db.transaction() as conn:
        org = await fetch_one(conn, "identity.default_organization")
        owner = await fetch_one(conn, "identity.first_owner")
        assert org is not None and owner is not None
        existing = await fetch_one(
            conn, "templates.template_by_name", {"organization_id": org["id"], "name": DEMO_TEMPLATE}
        )
    if existing is not None:
        log.info("demo.present", template=DEMO_TEMPLATE)
        return
    pushed = await push_version(
        services.db,
        services.clock,
        organization_id=org["id"],
        template_name=DEMO_TEMPLATE,
        archive=pack_directory(examples_dir() / DEMO_TEMPLATE),
        created_by=owner["id"],
        activate=True,
        message="demo template",
    )
    log.info(
        "demo.installed",
        template=DEMO_TEMPLATE,
        version=pushed.version_name,
        next="prebuildd workspaces create my-ws --template local-workspace --preset hello --wait",
    )
