-- The command log (api.md §8, data.md §2.6). Owned by manager/command_log.py.
-- Also the runtime-settings write of manager/instance.py, which needs the encrypted
-- bounce_imap_password column next to the settings JSON (instance.sql belongs to the store).

-- name: command_log_insert
INSERT INTO command_log (command_ts, actor, endpoint, tenant_id, payload, response_status,
                         response_body)
VALUES (:command_ts, :actor, :endpoint, :tenant_id, :payload, :response_status,
        :response_body);

-- name: command_log_page
-- Oldest first; :after_id is the cursor (0 for the first page). LIKE is case-insensitive
-- for ASCII in SQLite; the PostgreSQL twin uses ILIKE.
SELECT * FROM command_log
 WHERE id > :after_id
   AND (:tenant_id::text IS NULL OR tenant_id = :tenant_id)
   AND (:since::bigint IS NULL OR command_ts >= :since)
   AND (:until::bigint IS NULL OR command_ts <= :until)
   AND (:endpoint::text IS NULL OR endpoint ILIKE '%' || :endpoint::text || '%' ESCAPE '\')
 ORDER BY id
 LIMIT :limit;

-- name: command_log_purge
DELETE FROM command_log WHERE command_ts < :before;

-- name: instance_settings_write
UPDATE instance SET settings = :settings, settings_version = settings_version + 1,
       bounce_imap_password = :bounce_imap_password, updated_at = :now
 WHERE id = 1;
