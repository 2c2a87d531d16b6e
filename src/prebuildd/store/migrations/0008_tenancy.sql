-- Organizations as tenants: a role per membership (it was one site-wide role per user), a site owner who
-- manages organizations, organizations deleted softly (their history stays), and site-wide provisioner keys.

ALTER TABLE organization_members
    ADD COLUMN role text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'template-admin', 'member'));
CREATE INDEX organization_members_user ON organization_members (user_id);

-- An upgraded install keeps what everyone could do: each membership takes its user's site-wide role, and a
-- user who belonged to no organization joins the default one with that role.
UPDATE organization_members m SET role = u.role FROM users u WHERE u.id = m.user_id;
INSERT INTO organization_members (organization_id, user_id, created_at, role)
SELECT o.id, u.id, u.created_at, u.role
FROM users u JOIN organizations o ON o.is_default
WHERE NOT u.is_system AND NOT EXISTS (SELECT 1 FROM organization_members m WHERE m.user_id = u.id);

-- The first owner becomes the site owner.
ALTER TABLE users ADD COLUMN site_owner boolean NOT NULL DEFAULT false;
UPDATE users SET site_owner = true
WHERE id = (SELECT id FROM users WHERE role = 'owner' AND NOT is_system ORDER BY created_at, id LIMIT 1);
ALTER TABLE users DROP COLUMN role;

-- A deleted organization keeps its row for the history that names it (deleted templates, jobs, events); its
-- name is free again.
ALTER TABLE organizations ADD COLUMN deleted_at timestamptz;
ALTER TABLE organizations DROP CONSTRAINT organizations_name_key;
CREATE UNIQUE INDEX organizations_name ON organizations (name) WHERE deleted_at IS NULL;

-- A key of no organization serves every organization (created by the site owner only).
ALTER TABLE provisioner_keys ALTER COLUMN organization_id DROP NOT NULL;
CREATE UNIQUE INDEX provisioner_keys_site_name ON provisioner_keys (lower(name))
    WHERE organization_id IS NULL AND revoked_at IS NULL;
