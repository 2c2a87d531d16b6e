"""`prebuildd server --demo`: push the example `exec` template so a new user has something to build at once."""

from __future__ import annotations

from pathlib import Path

import structlog

from prebuildd.api.context import Services
from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.identity.users import first_owner
from prebuildd.templates import catalog
from prebuildd.templates.archive import pack_directory

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
    """Push the demo template as the first owner, unless it is there already (the server has bootstrapped)."""
    owner = await first_owner(services.db)
    if owner is None:
        raise RuntimeError("the demo template needs an owner: the server creates one on its first start")
    try:
        await catalog.get_template(services.db, owner, DEMO_TEMPLATE)
    except PrebuilddError as exc:
        if exc.code is not ErrorCode.NOT_FOUND:
            raise
    else:
        log.info("demo.present", template=DEMO_TEMPLATE)
        return
    pushed = await catalog.push(
        services.db,
        services.clock,
        owner,
        DEMO_TEMPLATE,
        pack_directory(examples_dir() / DEMO_TEMPLATE),
        activate=True,
        message="demo template",
    )
    log.info(
        "demo.installed",
        template=DEMO_TEMPLATE,
        version=pushed.version_name,
        next="prebuildd workspaces create my-ws --template local-workspace --preset hello --wait",
    )
