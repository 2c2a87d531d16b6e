"""Routes: organizations, the tenants. The site owner creates, renames and deletes them; anyone lists the ones
they belong to. These routes name the organization they are about in the path: it is their object, not the
organization the request acts in (which is what the ``Prebuildd-Organization`` header names everywhere)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from prebuildd.api.auditing import audited
from prebuildd.api.deps import AnyUserDep, AuditDep, ServicesDep, SiteOwnerDep
from prebuildd.api.models import OrganizationCreate, OrganizationOut, OrganizationUpdate
from prebuildd.identity import organizations as orgs
from prebuildd.identity.users import Membership, Organization

router = APIRouter(tags=["organizations"])


def _out(org: Organization, role: str) -> OrganizationOut:
    return OrganizationOut(
        id=org.id,
        name=org.name,
        display_name=org.display_name,
        is_default=org.is_default,
        role=role,  # type: ignore[arg-type]
        created_at=org.created_at,
    )


def _membership_out(m: Membership) -> OrganizationOut:
    return _out(m.organization, m.role)


@router.get(
    "/organizations",
    response_model=list[OrganizationOut],
    summary="Your organizations, with your role in each (the site owner: every organization)",
)
async def list_organizations(services: ServicesDep, user: AnyUserDep) -> list[OrganizationOut]:
    return [_membership_out(m) for m in await orgs.visible_organizations(services.db, user)]


@router.post(
    "/organizations",
    response_model=OrganizationOut,
    status_code=201,
    summary="Create an organization (site owner)",
    responses={409: {"description": "The name is taken."}},
)
@audited("org.create", "organization")
async def create_organization(
    body: OrganizationCreate, services: ServicesDep, user: SiteOwnerDep, audit: AuditDep
) -> OrganizationOut:
    org = await orgs.create_organization(
        services.db, services.clock, user, name=body.name, display_name=body.display_name, audit=audit
    )
    return _out(org, "owner")


@router.get("/organizations/{name}", response_model=OrganizationOut, summary="One of your organizations")
async def get_organization(name: str, services: ServicesDep, user: AnyUserDep) -> OrganizationOut:
    return _membership_out(await orgs.organization_named(services.db, user, name))


@router.patch(
    "/organizations/{name}",
    response_model=OrganizationOut,
    summary="Rename an organization or change its display name (site owner)",
    responses={409: {"description": "The new name is taken."}},
)
@audited("org.rename", "organization", "name")
async def update_organization(
    name: str, body: OrganizationUpdate, services: ServicesDep, user: SiteOwnerDep, audit: AuditDep
) -> OrganizationOut:
    org = await orgs.update_organization(
        services.db, user, name, new_name=body.name, display_name=body.display_name, audit=audit
    )
    return _out(org, "owner")


@router.delete(
    "/organizations/{name}",
    status_code=204,
    response_class=Response,
    summary="Delete an organization (site owner); refused while it has templates or workspaces",
    responses={409: {"description": "Templates or workspaces are left (named), or it is the default one."}},
)
@audited("org.delete", "organization", "name")
async def delete_organization(
    name: str, services: ServicesDep, user: SiteOwnerDep, audit: AuditDep
) -> Response:
    await orgs.delete_organization(services.db, services.clock, user, name, audit=audit)
    return Response(status_code=204)
