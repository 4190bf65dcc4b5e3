-- Tenants (api.md §7, data.md §2.1). Owned by manager/tenants.py and manager/auth.py.

-- name: tenant_get
SELECT * FROM tenants WHERE id = :id;

-- name: tenant_lock
-- Read inside a write transaction before a read-modify-write (PostgreSQL: FOR UPDATE).
SELECT * FROM tenants WHERE id = :id;

-- name: tenant_list
SELECT * FROM tenants WHERE (:active_only = 0 OR active = 1) ORDER BY id;

-- name: tenant_pending_events
SELECT count(*) AS n FROM message_events
 WHERE tenant_id = :tenant_id AND reportable = 1 AND reported_at IS NULL;

-- name: tenant_pending_events_all
SELECT tenant_id, count(*) AS n FROM message_events
 WHERE reportable = 1 AND reported_at IS NULL
 GROUP BY tenant_id;

-- name: tenant_insert
INSERT INTO tenants (id, name, client_base_url, client_sync_path, client_attachment_path,
                     client_auth, signing_secret, rate_limits, large_file_config,
                     default_account_id, active, suspended_batches, api_key_hash,
                     api_key_expires_at, api_key_created_at, created_at, updated_at)
VALUES (:id, :name, :client_base_url, :client_sync_path, :client_attachment_path,
        :client_auth, :signing_secret, :rate_limits, :large_file_config,
        :default_account_id, :active, '[]', :api_key_hash, NULL, :now, :now, :now);

-- name: tenant_update
-- Every configurable column at once: PATCH and replace merge in Python, then write here.
-- The API key, suspended batches, reporter state and created_at are never touched.
UPDATE tenants SET name = :name, client_base_url = :client_base_url,
       client_sync_path = :client_sync_path, client_attachment_path = :client_attachment_path,
       client_auth = :client_auth, signing_secret = :signing_secret,
       rate_limits = :rate_limits, large_file_config = :large_file_config,
       default_account_id = :default_account_id, active = :active, updated_at = :now
 WHERE id = :id;

-- name: tenant_message_counts
SELECT status, count(*) AS n FROM messages
 WHERE tenant_id = :tenant_id AND status IN ('queued', 'deferred', 'sending')
 GROUP BY status;

-- name: tenant_count_all
SELECT (SELECT count(*) FROM accounts WHERE tenant_id = :tenant_id) AS accounts,
       (SELECT count(*) FROM messages WHERE tenant_id = :tenant_id) AS messages;

-- name: tenant_expire_large_files
UPDATE large_files SET expires_at = :now
 WHERE tenant_id = :tenant_id AND deleted_at IS NULL AND expires_at > :now;

-- name: tenant_delete
DELETE FROM tenants WHERE id = :id;

-- name: tenant_set_api_key
UPDATE tenants SET api_key_hash = :api_key_hash, api_key_expires_at = :expires_at,
       api_key_created_at = :now, updated_at = :now
 WHERE id = :id;

-- name: tenant_revoke_api_key
UPDATE tenants SET api_key_hash = NULL, api_key_expires_at = NULL, api_key_created_at = NULL,
       updated_at = :now
 WHERE id = :id AND api_key_hash IS NOT NULL;

-- name: tenant_by_api_key
SELECT id, active, api_key_expires_at FROM tenants WHERE api_key_hash = :api_key_hash;

-- name: tenant_set_suspended
UPDATE tenants SET suspended_batches = :suspended_batches, updated_at = :now WHERE id = :id;

-- name: tenant_pending_messages
SELECT count(*) AS n FROM messages
 WHERE tenant_id = :tenant_id AND status IN ('queued', 'deferred')
   AND (:batch_code IS NULL OR batch_code = :batch_code);

-- name: tenant_account_exists
SELECT 1 AS found FROM accounts WHERE tenant_id = :tenant_id AND id = :id;

-- name: tenant_unreport_pending
UPDATE message_events SET reportable = 0
 WHERE tenant_id = :tenant_id AND reportable = 1 AND reported_at IS NULL;

-- name: tenant_settle_unreported
UPDATE messages SET settled_at = :now
 WHERE tenant_id = :tenant_id AND settled_at IS NULL
   AND status IN ('sent', 'error', 'cancelled');

-- name: tenant_lock_unsettled
-- Before the tenant's events: the order every transaction takes these rows in (tenant,
-- messages by pk, events); events first deadlocked with delete-messages.
SELECT pk FROM messages
 WHERE tenant_id = :tenant_id AND settled_at IS NULL AND status IN ('sent', 'error', 'cancelled')
 ORDER BY pk;

-- name: tenant_lock_for_change
-- The tenant row of a transaction that changes other columns of it or rows under it (an
-- account delete): exclusive among writers, yet foreign-key checks of rows being inserted
-- under the tenant (send_log, events) go on.
SELECT * FROM tenants WHERE id = :id;
