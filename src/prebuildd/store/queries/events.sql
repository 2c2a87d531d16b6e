-- name: insert
INSERT INTO events (created_at, kind, organization_id, template_id, preset_id, workspace_id, user_id, message, data)
VALUES (%(now)s, %(kind)s, %(organization_id)s, %(template_id)s, %(preset_id)s, %(workspace_id)s, %(user_id)s,
        %(message)s, %(data)s);
