-- Suppression lists (enterprise.md §2, data.md §2.9). Owned by manager/suppressions.py.

-- name: suppression_page
-- Ordered by address; :after is the cursor ('' for the first page).
SELECT address, reason, source, bounce_status, created_at FROM suppressions
 WHERE tenant_id = :tenant_id AND address > :after
   AND (:address::text IS NULL OR address = :address)
 ORDER BY address
 LIMIT :limit;

-- name: suppression_get
SELECT address, reason, source, bounce_status, created_at FROM suppressions
 WHERE tenant_id = :tenant_id AND address = :address;

-- name: suppression_add_manual
INSERT INTO suppressions (tenant_id, address, reason, source, created_at)
VALUES (:tenant_id, :address, :reason, 'manual', :now);

-- name: suppression_set_reason
UPDATE suppressions SET reason = :reason WHERE tenant_id = :tenant_id AND address = :address;

-- name: suppression_add_bounce
-- A hard bounce; an address already listed keeps its first entry.
INSERT INTO suppressions (tenant_id, address, reason, source, bounce_status, message_pk,
                          created_at)
VALUES (:tenant_id, :address, :reason, 'bounce', :bounce_status, :message_pk, :now)
ON CONFLICT (tenant_id, address) DO NOTHING;

-- name: suppression_remove
DELETE FROM suppressions WHERE tenant_id = :tenant_id AND address = :address;

-- name: suppression_among
-- :addresses is a JSON array on SQLite (the PostgreSQL twin uses = ANY(:addresses)).
SELECT address FROM suppressions
 WHERE tenant_id = :tenant_id AND address = ANY(:addresses::text[]);
