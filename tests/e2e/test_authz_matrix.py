"""The authorization matrix: every route of the app × every kind of caller × (own organization, other one) →
the status the server must answer, on a real server over HTTP.

The routes come from the application itself (``create_app(...).routes``): a route without a row here is a
failing cell, and a row naming a route the app no longer has fails ``test_every_row_names_a_route``. The
dashboard's pages (added by the server composition, not ``create_app``) are not API routes: they act through
the same service calls and permission checks, and tests/store/test_dashboard_sessions.py checks that every one
of them needs a session and every POST its CSRF token. A row is
one request aimed at one route (a route may have several, its *variants*); its expectation says, for each
caller and scope, the status. Callers: the site owner, an organization's owner, template-admin and member,
a provisioner key, a workspace's agent token, and no credentials at all.

Scopes (see ``tests.support.tenants`` for the world): the callers belong to ``bravo``, the organization made
after the default one, where every default-organization shortcut shows. *own*: they aim at bravo's objects.
*other*: they aim at ``alpha``'s (the default organization). The site owner belongs to alpha: *own* aims at
alpha's objects, *other* at bravo's (where the site owner acts as an owner of every organization).

Besides the status, every successful answer to anyone but the site owner is searched for what the caller must
not see: the names and ids of alpha's objects, and the secret in the failing prebuilds' error tails (only
template-admins and owners may read error text).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio
from fastapi.routing import iter_route_contexts
from structlog.testing import capture_logs

from prebuildd.api.app import create_app
from prebuildd.api.context import Services
from prebuildd.runtime.config import ServerConfig
from prebuildd.store.db import Database
from prebuildd.templates.archive import pack_directory
from tests.support.api import API, push
from tests.support.pg import PgServer
from tests.support.server import RunningServer, start_server
from tests.support.templates import write_template
from tests.support.tenants import (
    MANIFEST_NO_POOLS,
    ORGANIZATION_HEADER,
    Org,
    World,
    add_organization,
    build_world,
    has_organizations_api,
    user_in_organization,
)

ACTORS = ("site-owner", "owner", "template-admin", "member", "key", "agent", "none")
SCOPES = ("own", "other")
ROLE_RANK = {"member": 0, "template-admin": 1, "owner": 2}
USER_ROLES = ("owner", "template-admin", "member")
NOT_USERS = ("key", "agent", "none")

Expect = dict[tuple[str, str], int]


def app_routes() -> list[tuple[str, str]]:
    """Every (method, path) the application serves (HEAD comes with GET)."""
    app = create_app(cast(Services, None))  # the routes only; nothing is served
    found = {
        (method, str(context.path))
        for context in iter_route_contexts(app.routes)
        for method in (context.methods or ())
        if method != "HEAD"
    }
    return sorted(found, key=lambda r: (r[1], r[0]))


# -- expectations --------------------------------------------------------------------------------------------


def users_may(least: str, ok: int, *, other: int = 404, lower: int = 403) -> Expect:
    """A user route: roles from ``least`` up get ``ok`` in their organization and ``other`` when they aim at
    another's objects (404: it does not exist for them; ``ok`` for routes that aim at no object); lower roles
    get ``lower``; the site owner ``ok`` everywhere; keys, agent tokens and no credentials 401."""
    expect: Expect = {}
    for scope in SCOPES:
        expect["site-owner", scope] = ok
        for role in USER_ROLES:
            allowed = ROLE_RANK[role] >= ROLE_RANK[least]
            expect[role, scope] = (ok if scope == "own" else other) if allowed else lower
        for actor in NOT_USERS:
            expect[actor, scope] = 401
    return expect


def site_owner_only(ok: int) -> Expect:
    """A site-wide operator action: the site owner only; organization roles are refused (403)."""
    expect = users_may("owner", ok, other=403, lower=403)
    for scope in SCOPES:
        for role in USER_ROLES:
            expect[role, scope] = 403
    return expect


def key_only(ok: int, *, other: int = 404) -> Expect:
    """A daemon route: only a provisioner key (a user token is no key: 401)."""
    expect = {(actor, scope): 401 for actor in ACTORS for scope in SCOPES}
    expect["key", "own"] = ok
    expect["key", "other"] = other
    return expect


def agent_only(ok: int) -> Expect:
    """An agent route: only an agent token, which names its own workspace (so no other-organization case)."""
    expect = {(actor, scope): 401 for actor in ACTORS for scope in SCOPES}
    expect["agent", "own"] = expect["agent", "other"] = ok
    return expect


def everyone(ok: int) -> Expect:
    return {(actor, scope): ok for actor in ACTORS for scope in SCOPES}


def but(expect: Expect, **changes: int) -> Expect:
    """``expect`` with some cells changed: ``member_own=403`` sets (member, own)."""
    changed = dict(expect)
    for cell, status in changes.items():
        actor, scope = cell.rsplit("_", 1)
        key = (actor.replace("_", "-"), scope)
        assert key in changed, f"no cell {key}"
        changed[key] = status
    return changed


# -- requests ----------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One request of the matrix: who sends it, in which organization, at whose objects."""

    world: World
    actor: str
    scope: str
    tmp: Path

    @property
    def home(self) -> Org:
        """The organization the caller acts in."""
        if self.actor == "site-owner":
            return self.world.alpha if self.scope == "own" else self.world.bravo
        return self.world.bravo

    @property
    def target(self) -> Org:
        """The organization whose objects the request names."""
        if self.actor == "site-owner":
            return self.home
        return self.world.bravo if self.scope == "own" else self.world.alpha

    @property
    def username(self) -> str | None:
        if self.actor == "site-owner":
            return self.world.site_owner
        return self.home.usernames.get(self.actor)

    def token(self) -> str | None:
        if self.actor == "site-owner":
            return self.world.running.owner_token
        if self.actor in USER_ROLES:
            return self.home.tokens[self.actor]
        return {"key": self.home.key_secret, "agent": self.home.agent_token}.get(self.actor)

    def other_org(self, org: Org) -> Org:
        return self.world.bravo if org is self.world.alpha else self.world.alpha


@dataclass
class Request:
    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] | None = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


Build = Callable[[Cell], Awaitable[Request]]


@dataclass
class Row:
    method: str
    path: str
    build: Build
    expect: Expect
    variant: str = ""

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}" + (f" [{self.variant}]" if self.variant else "")


def fixed(method: str, path: str, **kwargs: Any) -> Build:
    """A request that is the same for every cell."""

    async def build(cell: Cell) -> Request:
        return Request(method, path, **kwargs)

    return build


def aimed(method: str, make: Callable[[Cell, Org], tuple[str, dict[str, Any]]]) -> Build:
    """A request at the target organization's objects: ``make(cell, target)`` gives the path and arguments."""

    async def build(cell: Cell) -> Request:
        path, kwargs = make(cell, cell.target)
        return Request(method, path, **kwargs)

    return build


def _t(path: str) -> Callable[[Cell, Org], tuple[str, dict[str, Any]]]:
    """A path naming the target's objects: {template}, {workspace}, {build}, {job}, {bystander}, {key}."""

    def make(cell: Cell, org: Org) -> tuple[str, dict[str, Any]]:
        return API + path.format(
            template=org.template,
            workspace=org.workspace_id,
            build=org.build_id,
            job=org.job_id,
            bystander=org.bystander,
            key=org.key_id,
        ), {}

    return make


def _with(path: str, **kwargs: Any) -> Callable[[Cell, Org], tuple[str, dict[str, Any]]]:
    """Like ``_t`` with arguments whose strings name the target's objects the same way."""

    def fill(value: Any, org: Org) -> Any:
        if isinstance(value, str):
            return value.format(template=org.template, bystander=org.bystander)
        if isinstance(value, dict):
            return {k: fill(v, org) for k, v in value.items()}
        return value

    def make(cell: Cell, org: Org) -> tuple[str, dict[str, Any]]:
        path_, _ = _t(path)(cell, org)
        return path_, {k: fill(v, org) for k, v in kwargs.items()}

    return make


async def _new_organization(cell: Cell) -> Request:
    return Request("POST", f"{API}/organizations", json={"name": cell.world.unique("org")})


async def _delete_organization(cell: Cell) -> Request:
    name = await cell.world.new_organization()
    return Request("DELETE", f"{API}/organizations/{name}")


async def _remove_member(cell: Cell) -> Request:
    username = await cell.world.new_user(cell.target)
    return Request("DELETE", f"{API}/members/{username}")


async def _new_user(cell: Cell) -> Request:
    return Request("POST", f"{API}/users", json={"username": cell.world.unique(f"{cell.home.prefix}-new")})


async def _own_token(cell: Cell) -> Request:
    return Request("POST", f"{API}/tokens", json={"name": cell.world.unique("mine")})


async def _token_for_bystander(cell: Cell) -> Request:
    body = {"name": cell.world.unique("theirs"), "username": cell.target.bystander}
    return Request("POST", f"{API}/tokens", json=body)


async def _revoke_bystander_token(cell: Cell) -> Request:
    token_id, _ = await cell.world.issue_token(cell.target, cell.target.bystander)
    return Request("DELETE", f"{API}/tokens/{token_id}")


async def _revoke_own_token(cell: Cell) -> Request:
    token_id = "00000000-0000-0000-0000-000000000000"
    if cell.username is not None:  # a second token of the caller's: the one it calls with stays valid
        token_id, _ = await cell.world.issue_token(cell.home, cell.username)
    return Request("DELETE", f"{API}/tokens/{token_id}")


async def _push(cell: Cell) -> Request:
    # Template names resolve in the organization acted in: a push cannot reach another organization's template
    # (it would create one of the caller's), so the other scope pushes a new template.
    name = cell.target.template if cell.scope == "own" else cell.world.unique(f"{cell.home.prefix}-pushed")
    directory = write_template(
        cell.tmp / cell.world.unique("push"), MANIFEST_NO_POOLS, {"create.sh": "#!/bin/sh\n"}
    )
    return Request(
        "POST",
        f"{API}/templates/{name}/versions",
        content=pack_directory(directory),
        headers={"Content-Type": "application/gzip"},
    )


async def _delete_template(cell: Cell) -> Request:
    name = await cell.world.new_template(cell.target, cell.tmp)
    return Request("DELETE", f"{API}/templates/{name}")


async def _new_workspace(cell: Cell) -> Request:
    body = {
        "name": cell.world.unique(f"{cell.home.prefix}-ws"),
        "template": cell.target.template,
        "parameters": {"size": cell.world.unique("cold")},  # fits no preset: a cold build, no claim
    }
    return Request("POST", f"{API}/workspaces", json=body)


async def _workspace_for_foreigner(cell: Cell) -> Request:
    body = {
        "name": cell.world.unique(f"{cell.home.prefix}-ws"),
        "template": cell.target.template,
        "parameters": {"size": cell.world.unique("cold")},
        "owner": cell.other_org(cell.target).usernames["member"],
    }
    return Request("POST", f"{API}/workspaces", json=body)


async def _start_workspace(cell: Cell) -> Request:
    await cell.world.workspace_settled(cell.target)  # a start while the last one runs is a 409
    return Request(
        "POST", f"{API}/workspaces/{cell.target.workspace_id}/builds", json={"transition": "start"}
    )


async def _new_key(cell: Cell) -> Request:
    return Request(
        "POST", f"{API}/provisioner-keys", json={"name": cell.world.unique(f"{cell.home.prefix}-k")}
    )


async def _revoke_key(cell: Cell) -> Request:
    key_id = await cell.world.new_key(cell.target)
    return Request("DELETE", f"{API}/provisioner-keys/{key_id}")


async def _register(cell: Cell) -> Request:
    identity = cell.world.unique("matrix-daemon")
    return Request(
        "POST",
        f"{API}/provisioner/daemon/register",
        json={"identity": identity, "worker_id": f"{identity}#1"},
    )


_DAEMON = "/provisioner/daemon"
_WORKER = {"worker_id": "matrix#1"}

# fmt: off
ROWS: list[Row] = [
    # -- public ----------------------------------------------------------------------------------------------
    Row("GET", "/openapi.json", fixed("GET", "/openapi.json"), everyone(200)),
    Row("GET", "/docs", fixed("GET", "/docs"), everyone(200)),
    Row("GET", "/healthz", fixed("GET", "/healthz"), everyone(200)),
    Row("GET", "/readyz", fixed("GET", "/readyz"), everyone(200)),
    # Site-wide operator data: the site owner's token (or a dedicated metrics token), never anyone's.
    Row("GET", "/metrics", fixed("GET", "/metrics"), site_owner_only(200)),
    # -- organizations and memberships -----------------------------------------------------------------------
    Row("GET", f"{API}/organizations", fixed("GET", f"{API}/organizations"), users_may("member", 200, other=200)),
    Row("POST", f"{API}/organizations", _new_organization, site_owner_only(201)),
    Row("GET", f"{API}/organizations/{{name}}",
        aimed("GET", lambda cell, org: (f"{API}/organizations/{org.name}", {})), users_may("member", 200)),
    Row("PATCH", f"{API}/organizations/{{name}}",
        aimed("PATCH", lambda cell, org: (f"{API}/organizations/{org.name}", {"json": {"display_name": org.prefix}})),
        site_owner_only(200)),
    Row("DELETE", f"{API}/organizations/{{name}}", _delete_organization, site_owner_only(204)),
    Row("PUT", f"{API}/members/{{username}}",
        aimed("PUT", _with("/members/{bystander}", json={"role": "member"})), users_may("owner", 200)),
    Row("DELETE", f"{API}/members/{{username}}", _remove_member, users_may("owner", 204)),
    # -- users and tokens ------------------------------------------------------------------------------------
    Row("GET", f"{API}/users/me", fixed("GET", f"{API}/users/me"), users_may("member", 200, other=200)),
    Row("GET", f"{API}/users", fixed("GET", f"{API}/users"), users_may("template-admin", 200, other=200)),
    Row("POST", f"{API}/users", _new_user, users_may("owner", 201, other=201)),
    # An owner of another organization could change a role and suspend: now it does not find the user.
    Row("PATCH", f"{API}/users/{{username}}",
        aimed("PATCH", _with("/users/{bystander}", json={"role": "member", "suspended": False})),
        users_may("owner", 200)),
    Row("GET", f"{API}/tokens", fixed("GET", f"{API}/tokens"), users_may("member", 200, other=200)),
    Row("POST", f"{API}/tokens", _own_token, users_may("member", 201, other=201), "own"),
    # An owner of another organization got a working token for the default organization's users.
    Row("POST", f"{API}/tokens", _token_for_bystander, users_may("owner", 201), "for another user"),
    Row("DELETE", f"{API}/tokens/{{token_id}}", _revoke_own_token, users_may("member", 204, other=204), "own"),
    Row("DELETE", f"{API}/tokens/{{token_id}}", _revoke_bystander_token, users_may("owner", 204, lower=404),
        "another user's"),
    # -- templates -------------------------------------------------------------------------------------------
    Row("GET", f"{API}/templates", fixed("GET", f"{API}/templates"), users_may("member", 200, other=200)),
    Row("POST", f"{API}/templates/{{name}}/versions", _push, users_may("template-admin", 201, other=201)),
    Row("GET", f"{API}/templates/{{name}}", aimed("GET", _t("/templates/{template}")), users_may("member", 200)),
    Row("PATCH", f"{API}/templates/{{name}}",
        aimed("PATCH", _with("/templates/{template}", json={"deprecated": False})),
        users_may("template-admin", 200)),
    Row("DELETE", f"{API}/templates/{{name}}", _delete_template, users_may("template-admin", 204)),
    Row("GET", f"{API}/templates/{{name}}/versions", aimed("GET", _t("/templates/{template}/versions")),
        users_may("member", 200)),
    Row("GET", f"{API}/templates/{{name}}/versions/{{version}}",
        aimed("GET", _t("/templates/{template}/versions/v1")), users_may("member", 200)),
    # Import logs are script output: template-admins and owners only.
    Row("GET", f"{API}/templates/{{name}}/versions/{{version}}/logs",
        aimed("GET", _t("/templates/{template}/versions/v1/logs")), users_may("template-admin", 200)),
    Row("GET", f"{API}/templates/{{name}}/presets", aimed("GET", _t("/templates/{template}/presets")),
        users_may("member", 200)),
    # -- workspaces ------------------------------------------------------------------------------------------
    Row("POST", f"{API}/workspaces", _new_workspace, users_may("member", 201)),
    # A template-admin could create a workspace owned by a user of another organization.
    Row("POST", f"{API}/workspaces", _workspace_for_foreigner,
        but(users_may("template-admin", 404), site_owner_own=404, site_owner_other=404, member_other=404),
        "owner in another organization"),
    Row("GET", f"{API}/workspaces", fixed("GET", f"{API}/workspaces"), users_may("member", 200, other=200)),
    Row("GET", f"{API}/workspaces", fixed("GET", f"{API}/workspaces", params={"owner": "all"}),
        users_may("template-admin", 200, other=200), "everyone's"),
    # Users of another organization could be probed by name.
    Row("GET", f"{API}/workspaces",
        aimed("GET", lambda cell, org: (f"{API}/workspaces", {"params": {"owner": org.bystander}})),
        users_may("template-admin", 200), "a named user's"),
    Row("GET", f"{API}/workspaces/{{workspace_id}}", aimed("GET", _t("/workspaces/{workspace}")),
        users_may("member", 200)),
    Row("POST", f"{API}/workspaces/{{workspace_id}}/builds", _start_workspace, users_may("member", 201)),
    Row("GET", f"{API}/workspaces/{{workspace_id}}/builds", aimed("GET", _t("/workspaces/{workspace}/builds")),
        users_may("member", 200)),
    Row("GET", f"{API}/builds/{{build_id}}/logs", aimed("GET", _t("/builds/{build}/logs")),
        users_may("member", 200)),
    # -- jobs and settings -----------------------------------------------------------------------------------
    Row("GET", f"{API}/jobs", fixed("GET", f"{API}/jobs"), users_may("template-admin", 200, other=200)),
    # One job, with its waiting reason: whoever started it (the member) and template-admins of its organization.
    Row("GET", f"{API}/jobs/{{job_id}}", aimed("GET", _t("/jobs/{job}")), users_may("member", 200)),
    # The audit log: owners, of their organization's entries (the site owner: all).
    Row("GET", f"{API}/audit", fixed("GET", f"{API}/audit"), users_may("owner", 200, other=200)),
    # The job has finished: whoever may cancel it is told so (409); the member started it.
    Row("POST", f"{API}/jobs/{{job_id}}/cancel", aimed("POST", _t("/jobs/{job}/cancel")),
        users_may("member", 409)),
    Row("GET", f"{API}/settings", fixed("GET", f"{API}/settings"), users_may("member", 200, other=200)),
    Row("PUT", f"{API}/settings", fixed("PUT", f"{API}/settings", json={"reconciliation_paused": False}),
        site_owner_only(200)),
    # -- prebuilds -------------------------------------------------------------------------------------------
    Row("GET", f"{API}/prebuilds/status", fixed("GET", f"{API}/prebuilds/status"),
        users_may("member", 200, other=200)),
    Row("GET", f"{API}/prebuilds/settings", fixed("GET", f"{API}/prebuilds/settings"),
        users_may("member", 200, other=200)),
    Row("PUT", f"{API}/prebuilds/settings",
        fixed("PUT", f"{API}/prebuilds/settings", json={"reconciliation_paused": False}), site_owner_only(200)),
    Row("PATCH", f"{API}/templates/{{template}}/presets/{{preset}}",
        aimed("PATCH", _with("/templates/{template}/presets/idle", json={"instances": 0})),
        users_may("template-admin", 200)),
    Row("POST", f"{API}/prebuilds/invalidate",
        aimed("POST", _with("/prebuilds/invalidate", json={"template": "{template}", "preset": "idle"})),
        users_may("template-admin", 200)),
    Row("POST", f"{API}/prebuilds/retry",
        aimed("POST", _with("/prebuilds/retry", json={"template": "{template}", "preset": "idle"})),
        users_may("template-admin", 200)),
    Row("POST", f"{API}/prebuilds/cleanup",
        aimed("POST", _with("/prebuilds/cleanup", json={"template": "{template}", "dry_run": True})),
        users_may("template-admin", 200)),
    # Members see the pool's counts and status, never the error text (checked on every answer).
    Row("GET", f"{API}/prebuilds/explain",
        aimed("GET", _with("/prebuilds/explain", params={"template": "{template}", "preset": "failing"})),
        users_may("member", 200)),
    # -- provisioner keys and daemons ------------------------------------------------------------------------
    Row("GET", f"{API}/provisioner-keys", fixed("GET", f"{API}/provisioner-keys"),
        users_may("owner", 200, other=200)),
    Row("POST", f"{API}/provisioner-keys", _new_key, users_may("owner", 201, other=201)),
    Row("DELETE", f"{API}/provisioner-keys/{{key}}", _revoke_key, users_may("owner", 204)),
    Row("POST", f"{API}{_DAEMON}/register", _register, key_only(200, other=200)),
    # A kind no job has: the key is accepted and gets no job (taking one would steal the server's work).
    Row("POST", f"{API}{_DAEMON}/acquire",
        fixed("POST", f"{API}{_DAEMON}/acquire", json={**_WORKER, "kinds": ["none-such"], "wait_seconds": 0}),
        key_only(204, other=204)),
    # A finished job this key did not acquire: its own organization's is answered (lost / not accepted).
    Row("POST", f"{API}{_DAEMON}/jobs/{{job_id}}/heartbeat",
        aimed("POST", _with(f"{_DAEMON}/jobs/{{job}}/heartbeat", json=_WORKER)), key_only(200)),
    Row("POST", f"{API}{_DAEMON}/jobs/{{job_id}}/logs",
        aimed("POST", _with(f"{_DAEMON}/jobs/{{job}}/logs", json={**_WORKER, "lines": []})), key_only(204)),
    Row("POST", f"{API}{_DAEMON}/jobs/{{job_id}}/complete",
        aimed("POST", _with(f"{_DAEMON}/jobs/{{job}}/complete", json={**_WORKER, "outcome": {}})),
        key_only(200)),
    # -- agents ----------------------------------------------------------------------------------------------
    Row("GET", f"{API}/agent/me", fixed("GET", f"{API}/agent/me"), agent_only(200)),
    Row("POST", f"{API}/agent/lifecycle", fixed("POST", f"{API}/agent/lifecycle", json={"state": "ready"}),
        agent_only(200)),
    Row("GET", f"{API}/agent/claim", fixed("GET", f"{API}/agent/claim", params={"wait": 0}), agent_only(200)),
]
# fmt: on

# Cells (test ids) that still answer wrongly, with the leak they show: strict xfails, so that a fix shows.
KNOWN_LEAKS: dict[str, str] = {}
if "metrics_public" not in ServerConfig.model_fields:  # until the server protects /metrics (--metrics-token)
    KNOWN_LEAKS.update(
        {
            f"GET /metrics | {actor} | {scope}": "/metrics is open to anyone, without a token, with organization ids"
            for actor in ACTORS
            if actor != "site-owner"
            for scope in SCOPES
        }
    )


# -- the world ---------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    name = pg_server.create_database()
    url = pg_server.url(name)
    root = tmp_path_factory.mktemp("matrix")
    running = await start_server(url, root / "server")
    db = await Database(url, min_size=1, max_size=4).open()
    try:
        yield await build_world(running, db, root / "world")
    finally:
        await db.close()
        await running.server.stop()
        pg_server.drop_database(name)


def _forbidden(cell: Cell) -> list[str]:
    """What must not appear in a successful answer to this caller."""
    if cell.actor == "site-owner":
        return []
    forbidden = [*cell.world.alpha.markers(), cell.world.alpha.secret]
    if cell.actor not in ("owner", "template-admin"):
        forbidden.append(cell.world.bravo.secret)
    return forbidden


def _cells() -> list[Any]:
    rows: dict[tuple[str, str], list[Row | None]] = {}
    for row in ROWS:
        rows.setdefault((row.method, row.path), []).append(row)
    params = []
    for method, path in app_routes():
        for entry in rows.get((method, path), [None]):
            label = entry.label if entry is not None else f"{method} {path}"
            for actor in ACTORS:
                for scope in SCOPES:
                    cell_id = f"{label} | {actor} | {scope}"
                    marks = []
                    if cell_id in KNOWN_LEAKS:
                        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_LEAKS[cell_id]))
                    params.append(pytest.param((method, path), entry, actor, scope, id=cell_id, marks=marks))
    return params


async def _send(client: httpx.AsyncClient, request: Request) -> httpx.Response:
    """Send ``request``; a 503 (the server could not get a database connection in time, as on a starved machine)
    says nothing about authorization and is asked again, a few times."""
    for _ in range(3):
        response = await client.request(
            request.method,
            request.path,
            json=request.json,
            params=request.params,
            content=request.content,
            headers=dict(request.headers),
        )
        if response.status_code != 503:
            break
    return response


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("route", "row", "actor", "scope"), _cells())
async def test_matrix(
    world: World, tmp_path: Path, route: tuple[str, str], row: Row | None, actor: str, scope: str
) -> None:
    assert row is not None, f"{route[0]} {route[1]} has no row in the authorization matrix: add one to ROWS"
    cell = Cell(world, actor, scope, tmp_path)
    request = await row.build(cell)
    async with world.client(cell.token(), cell.home) as client:
        response = await _send(client, request)
    expected = row.expect[actor, scope]
    assert response.status_code == expected, (
        f"{row.label} as {actor} ({scope} organization): expected {expected}, "
        f"got {response.status_code}: {response.text[:500]}"
    )
    if response.is_success:
        leaked = [marker for marker in _forbidden(cell) if marker in response.text]
        assert not leaked, (
            f"{row.label} as {actor} ({scope}): the answer shows {leaked}: {response.text[:800]}"
        )


def test_every_row_names_a_route() -> None:
    routes = set(app_routes())
    stale = sorted({row.label for row in ROWS if (row.method, row.path) not in routes})
    assert not stale, f"rows for routes the app does not have: {stale}"


def test_every_row_covers_every_caller() -> None:
    for row in ROWS:
        assert set(row.expect) == {(a, s) for a in ACTORS for s in SCOPES}, row.label
    labels = [row.label for row in ROWS]
    assert len(labels) == len(set(labels)), "two rows with the same label: name their variants"


async def test_a_key_never_takes_a_job_of_another_organization(
    idle_server: RunningServer, db: Database, tmp_path: Path
) -> None:
    """A key of bravo asking for work while only alpha has a job: no job, and alpha's job was never taken (it
    used to be acquired, its agent tokens issued, then released), so alpha's own key gets it next."""
    api = await has_organizations_api(idle_server)
    async with idle_server.client() as owner:
        pushed = await push(owner, tmp_path, "alpha-only", MANIFEST_NO_POOLS, {"create.sh": "#!/bin/sh\n"})
        assert pushed.status_code == 201, pushed.text
        alpha_key = await owner.post(f"{API}/provisioner-keys", json={"name": "alpha-key"})
        assert alpha_key.status_code == 201, alpha_key.text
    bravo_id = await add_organization(db, idle_server, "bravo", api)
    bravo_owner = await user_in_organization(idle_server, db, bravo_id, "bravo", "bravo-owner", "owner", api)
    headers = {ORGANIZATION_HEADER: "bravo"} if api else {}
    async with idle_server.client(bravo_owner) as client:
        bravo_key = await client.post(f"{API}/provisioner-keys", json={"name": "bravo-key"}, headers=headers)
        assert bravo_key.status_code == 201, bravo_key.text
    body = {"worker_id": "daemon#1", "kinds": ["exec"], "wait_seconds": 0}
    with capture_logs() as logs:
        async with idle_server.client(bravo_key.json()["secret"]) as daemon:
            foreign = await daemon.post(f"{API}/provisioner/daemon/acquire", json=body)
    assert foreign.status_code == 204, foreign.text
    assert [e for e in logs if "foreign" in e["event"]] == []
    async with idle_server.client(alpha_key.json()["secret"]) as daemon:
        own = await daemon.post(f"{API}/provisioner/daemon/acquire", json=body)
    assert own.status_code == 200, own.text
    assert own.json()["id"] == pushed.json()["job_id"]


def _user_rows() -> list[Row]:
    return [row for row in ROWS if row.path.startswith(API) and row.expect["owner", "own"] != 401]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("row", _user_rows(), ids=lambda row: row.label)
async def test_naming_an_organization_one_is_not_in_is_a_404(world: World, tmp_path: Path, row: Row) -> None:
    """The organization header cannot reach in: bravo's owner naming alpha is told it does not exist, on every
    user route, before any role check or lookup."""
    cell = Cell(world, "owner", "own", tmp_path)
    request = await row.build(cell)
    async with world.client(cell.token(), world.alpha) as client:
        response = await _send(client, request)
    assert response.status_code == 404, f"{row.label}: {response.status_code} {response.text[:300]}"
    assert response.json()["code"] == "not_found"
