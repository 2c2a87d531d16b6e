"""Two organizations on one real server, each with every kind of actor and an object of every kind to aim at.

``build_world`` makes the default organization (``alpha``, where the site owner is) and a second one (``bravo``),
each with an owner, a template-admin, a member, a bystander (a member that user-administration requests aim at),
a provisioner key, a template with three presets (``warm`` keeps a ready prebuild, ``failing`` keeps failing with
a secret in its error tail, ``idle`` has no pool), the member's workspace with a finished build (its job), the
agent token of that workspace and a token of the bystander. Names are unique across the two organizations, so a
request naming another organization's object can only reach it through a leak.

The second organization is made through the organizations API when the server has one, else straight in the
database (as the reproductions of the leaks did).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID, uuid4

import httpx

from prebuildd.identity import users as identity_users
from prebuildd.runtime.clock import SystemClock
from prebuildd.store import identity as identity_store
from prebuildd.store.db import Database
from tests.support.api import API, push, wait_build, wait_imported
from tests.support.server import RunningServer
from tests.support.waiting import wait_for

ORGANIZATION_HEADER = "Prebuildd-Organization"
"""How a request names the organization it acts in (ignored by a server without organizations)."""

ROLES = ("owner", "template-admin", "member")

MANIFEST = """
provisioner = "exec"
agents = ["main"]
[exec]
create = "create.sh"
stop = "stop.sh"
delete = "delete.sh"

[[parameters]]
name = "mode"
type = "string"
default = "ok"
options = ["ok", "fail"]

[[parameters]]
name = "size"
type = "string"
default = "cold"

[[presets]]
name = "warm"
parameters = { size = "warm" }
[presets.prebuilds]
instances = 1

[[presets]]
name = "failing"
parameters = { mode = "fail", size = "failing" }
[presets.prebuilds]
instances = 1

[[presets]]
name = "idle"
parameters = { size = "idle" }
"""


def template_files(agent_tokens: Path, secret: str) -> dict[str, str]:
    """Scripts that record each workspace's agent token under ``agent_tokens`` and, in ``fail`` mode, print
    ``secret`` (as a script leaking a credential would) and fail."""
    return {
        "create.sh": f"""#!/bin/sh
echo "$PREBUILDD_AGENT_TOKEN" > "{agent_tokens}/$PREBUILDD_WORKSPACE_ID"
if [ "$PREBUILDD_PARAM_MODE" = fail ]; then
    echo "connecting with {secret}"
    exit 1
fi
echo "created $PREBUILDD_WORKSPACE_NAME"
""",
        "stop.sh": "#!/bin/sh\necho stopped\n",
        "delete.sh": "#!/bin/sh\necho deleted\n",
    }


@dataclass
class Org:
    """One organization of the world: its people (tokens by role), its objects, and what must not leak."""

    prefix: str
    """What its users', template's, key's and workspace's names start with."""
    name: str
    """The organization's name, as requests name it."""
    id: str
    template: str
    secret: str
    """Text in the error tail of the failing preset's prebuilds: only template-admins and owners may read it."""
    usernames: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    bystander: str = ""
    bystander_token_id: str = ""
    key_name: str = ""
    key_id: str = ""
    key_secret: str = ""
    workspace_id: str = ""
    workspace_name: str = ""
    build_id: str = ""
    job_id: str = ""
    agent_token: str = ""

    def markers(self) -> list[str]:
        """Strings that name this organization's objects: none may appear in another organization's answers."""
        names = [self.template, self.bystander, self.key_name, self.workspace_name, *self.usernames.values()]
        ids = [self.id, self.workspace_id, self.build_id, self.job_id, self.key_id, self.bystander_token_id]
        return [m for m in [*names, *ids] if m]


@dataclass
class World:
    running: RunningServer
    db: Database
    site_owner: str
    """The site owner's username (the first user, owner of the default organization)."""
    alpha: Org
    bravo: Org
    tenancy_api: bool
    """Whether the server has the organizations API (else the second organization was made in the database)."""
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        return self.running.url

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{next(self._counter)}"

    def client(self, token: str | None, org: Org | None = None) -> httpx.AsyncClient:
        """A client sending ``token`` (none: no credentials) and naming ``org`` as the one it acts in."""
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if org is not None and self.tenancy_api:
            headers[ORGANIZATION_HEADER] = org.name
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    def admin(self, org: Org) -> httpx.AsyncClient:
        """The site owner acting in ``org``: the fixtures' own hand for setting things up."""
        return self.client(self.running.owner_token, org)

    async def issue_token(self, org: Org, username: str) -> tuple[str, str]:
        """A new token of ``username`` (a user of ``org``): its id and secret."""
        async with self.admin(org) as client:
            issued = await client.post(
                f"{API}/tokens", json={"name": self.unique("matrix"), "username": username}
            )
        assert issued.status_code == 201, issued.text
        body = issued.json()
        return str(body["token"]["id"]), str(body["secret"])

    async def new_key(self, org: Org) -> str:
        async with self.client(org.tokens["owner"], org) as client:
            created = await client.post(f"{API}/provisioner-keys", json={"name": self.unique("key")})
        assert created.status_code == 201, created.text
        return str(created.json()["key"]["id"])

    async def new_organization(self) -> str:
        """A new, empty organization (to be deleted)."""
        name = self.unique("doomed-org")
        async with self.client(self.running.owner_token) as client:
            created = await client.post(f"{API}/organizations", json={"name": name})
        assert created.status_code == 201, created.text
        return name

    async def new_user(self, org: Org) -> str:
        """A new member of ``org`` (to be removed)."""
        username = self.unique(f"{org.prefix}-temp")
        await _add_user(self, org, username, "member")
        return username

    async def new_template(self, org: Org, tmp: Path) -> str:
        """A template of ``org`` that nothing uses (whose import has finished), to be deleted."""
        name = self.unique(f"{org.prefix}-doomed")
        async with self.client(org.tokens["template-admin"], org) as client:
            pushed = await push(client, tmp, name, MANIFEST_NO_POOLS, {"create.sh": "#!/bin/sh\n"})
            assert pushed.status_code == 201, pushed.text
            await wait_imported(client, name, "v1")
        return name

    async def workspace_settled(self, org: Org) -> None:
        """Wait until the member's workspace has no active build (a start may be aimed at it next)."""
        async with self.client(org.tokens["owner"], org) as client:
            builds = await client.get(f"{API}/workspaces/{org.workspace_id}/builds")
            assert builds.status_code == 200, builds.text
            latest = builds.json()[0]["build_number"]
            await wait_build(client, org.workspace_id, latest)


MANIFEST_NO_POOLS = """
provisioner = "exec"
[exec]
create = "create.sh"
"""


async def has_organizations_api(running: RunningServer) -> bool:
    async with running.client() as client:
        return (await client.get(f"{API}/organizations")).status_code == 200


async def add_organization(world_db: Database, running: RunningServer, name: str, api: bool) -> str:
    """A new organization's id: through the organizations API, or straight into the database without one."""
    if api:
        async with running.client() as client:
            created = await client.post(f"{API}/organizations", json={"name": name, "display_name": name})
        assert created.status_code == 201, created.text
        return str(created.json()["id"])
    async with world_db.transaction() as conn:
        org = await identity_store.insert_organization(
            conn, id=uuid4(), name=name, display_name=name, is_default=False, now=SystemClock().now()
        )
    return str(org.id)


async def user_in_organization(
    running: RunningServer, db: Database, org_id: str, org_name: str, username: str, role: str, api: bool
) -> str:
    """A token of a new user with ``role`` in a non-default organization (made by the site owner)."""
    headers = {ORGANIZATION_HEADER: org_name} if api else {}
    async with running.client() as client:
        if api:
            created = await client.post(
                f"{API}/users", json={"username": username, "role": role}, headers=headers
            )
            assert created.status_code == 201, created.text
        else:
            await identity_users.create_user(
                db, SystemClock(), username=username, role=role, organization_id=UUID(org_id)
            )
        issued = await client.post(
            f"{API}/tokens", json={"name": "matrix", "username": username}, headers=headers
        )
    assert issued.status_code == 201, issued.text
    return str(issued.json()["secret"])


async def _add_user(world: World, org: Org, username: str, role: str) -> None:
    if world.tenancy_api or org is world.alpha:
        async with world.admin(org) as client:
            created = await client.post(f"{API}/users", json={"username": username, "role": role})
        assert created.status_code == 201, created.text
    else:  # no organizations API: a user straight into the second organization, as the reproductions did
        await identity_users.create_user(
            world.db, SystemClock(), username=username, role=role, organization_id=UUID(org.id)
        )


async def _populate(world: World, org: Org, tmp: Path, agent_tokens: Path) -> None:
    for role in (*ROLES, "bystander"):
        username = f"{org.prefix}-{role}"
        await _add_user(world, org, username, "member" if role == "bystander" else role)
        if role == "bystander":
            org.bystander = username
            org.bystander_token_id, _ = await world.issue_token(org, username)
        else:
            org.usernames[role] = username
            _, org.tokens[role] = await world.issue_token(org, username)
    async with world.client(org.tokens["owner"], org) as owner:
        org.key_name = f"{org.prefix}-key"
        created = await owner.post(f"{API}/provisioner-keys", json={"name": org.key_name})
        assert created.status_code == 201, created.text
        org.key_id = str(created.json()["key"]["id"])
        org.key_secret = str(created.json()["secret"])
    async with world.client(org.tokens["template-admin"], org) as admin:
        pushed = await push(
            admin, tmp, org.template, MANIFEST, template_files(agent_tokens, org.secret), activate="true"
        )
        assert pushed.status_code == 201, pushed.text
        assert (await wait_imported(admin, org.template, "v1"))["import_status"] == "succeeded"
    async with world.client(org.tokens["member"], org) as member:
        org.workspace_name = f"{org.prefix}-workspace"
        created = await member.post(
            f"{API}/workspaces", json={"name": org.workspace_name, "template": org.template}
        )
        assert created.status_code == 201, created.text
        org.workspace_id = str(created.json()["id"])
        build = await wait_build(member, org.workspace_id, 1)
        assert build["status"] == "succeeded", build
        org.build_id, org.job_id = str(build["id"]), str(build["job_id"])
    org.agent_token = (agent_tokens / org.workspace_id).read_text().strip()


async def _pools_settled(world: World, org: Org) -> None:
    """Wait until the warm pool has a prebuild and the failing one has failed (its error tail is stored)."""

    async def settled() -> bool:
        async with world.admin(org) as client:
            status = await client.get(f"{API}/prebuilds/status")
        assert status.status_code == 200, status.text
        presets = {(p["template"], p["preset"]): p for p in status.json()["presets"]}
        warm, failing = presets.get((org.template, "warm")), presets.get((org.template, "failing"))
        return bool(warm and failing and warm["running"] >= 1 and failing["failed"] >= 1)

    await wait_for(settled, timeout=90, what=f"the pools of {org.template}")


async def build_world(running: RunningServer, db: Database, tmp: Path) -> World:
    api = await has_organizations_api(running)
    async with running.client() as client:
        me = await client.get(f"{API}/users/me")
    assert me.status_code == 200, me.text
    async with db.transaction() as conn:
        default = await identity_store.default_organization(conn)
    assert default is not None
    alpha = Org("alpha", default.name, str(default.id), "alpha-tpl", "DB_PASSWORD=hunter2-alpha")
    bravo_id = await add_organization(db, running, "bravo", api)
    bravo = Org("bravo", "bravo", bravo_id, "bravo-tpl", "DB_PASSWORD=hunter2-bravo")
    world = World(running, db, str(me.json()["username"]), alpha, bravo, api)
    agent_tokens = tmp / "agent-tokens"
    agent_tokens.mkdir(parents=True, exist_ok=True)
    for org in (alpha, bravo):
        await _populate(world, org, tmp / org.prefix, agent_tokens)
    for org in (alpha, bravo):
        await _pools_settled(world, org)
    return world
