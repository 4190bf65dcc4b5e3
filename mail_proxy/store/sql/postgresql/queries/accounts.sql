-- SMTP accounts (api.md §6, data.md §2.2). Owned by manager/accounts.py.

-- name: account_get
SELECT a.*, t.default_account_id AS tenant_default_account_id
  FROM accounts a JOIN tenants t ON t.id = a.tenant_id
 WHERE a.tenant_id = :tenant_id AND a.id = :id;

-- name: account_lock
-- Read inside a write transaction before a read-modify-write (PostgreSQL: FOR UPDATE).
SELECT * FROM accounts WHERE tenant_id = :tenant_id AND id = :id FOR UPDATE;

-- name: account_list
SELECT a.*, t.default_account_id AS tenant_default_account_id
  FROM accounts a JOIN tenants t ON t.id = a.tenant_id
 WHERE (:tenant_id::text IS NULL OR a.tenant_id = :tenant_id)
 ORDER BY a.tenant_id, a.id;

-- name: account_tenant_exists
SELECT client_base_url FROM tenants WHERE id = :tenant_id;

-- name: account_insert
INSERT INTO accounts (tenant_id, id, host, port, username, password, tls_mode, tls_verify,
                      tls_ca_file, max_connections, batch_size, ttl, limit_per_minute,
                      limit_per_hour, limit_per_day, limit_behavior, is_pec, imap_host,
                      imap_port, imap_user, imap_password, imap_folder, imap_tls,
                      created_at, updated_at)
VALUES (:tenant_id, :id, :host, :port, :username, :password, :tls_mode, :tls_verify,
        :tls_ca_file, :max_connections, :batch_size, :ttl, :limit_per_minute,
        :limit_per_hour, :limit_per_day, :limit_behavior, :is_pec, :imap_host,
        :imap_port, :imap_user, :imap_password, :imap_folder, :imap_tls, :now, :now);

-- name: account_update
-- Every configurable column at once; throttling and IMAP polling state are left alone.
UPDATE accounts SET host = :host, port = :port, username = :username, password = :password,
       tls_mode = :tls_mode, tls_verify = :tls_verify, tls_ca_file = :tls_ca_file,
       max_connections = :max_connections, batch_size = :batch_size, ttl = :ttl,
       limit_per_minute = :limit_per_minute, limit_per_hour = :limit_per_hour,
       limit_per_day = :limit_per_day, limit_behavior = :limit_behavior, is_pec = :is_pec,
       imap_host = :imap_host, imap_port = :imap_port, imap_user = :imap_user,
       imap_password = :imap_password, imap_folder = :imap_folder, imap_tls = :imap_tls,
       updated_at = :now
 WHERE tenant_id = :tenant_id AND id = :id;

-- name: account_message_counts
SELECT status, count(*) AS n FROM messages
 WHERE tenant_id = :tenant_id AND account_id = :account_id
   AND status IN ('queued', 'deferred', 'sending')
 GROUP BY status;

-- name: account_cancel_events
-- T17, first half: the `cancelled` event of every message about to be cancelled.
INSERT INTO message_events (message_pk, tenant_id, event_type, event_ts, description,
                            metadata, reportable)
SELECT pk, tenant_id, 'cancelled', :now, :description, :metadata, :reportable
  FROM messages
 WHERE tenant_id = :tenant_id AND account_id = :account_id
   AND status IN ('queued', 'deferred');

-- name: account_cancel_messages
-- T17, second half (same transaction). settled_at is set only when nothing will be reported.
UPDATE messages SET status = 'cancelled', finished_at = :now, updated_at = :now,
       next_attempt_at = NULL, last_error = :description, last_error_code = 'cancelled',
       settled_at = :settled_at
 WHERE tenant_id = :tenant_id AND account_id = :account_id
   AND status IN ('queued', 'deferred');

-- name: account_clear_default
UPDATE tenants SET default_account_id = NULL, updated_at = :now
 WHERE id = :tenant_id AND default_account_id = :account_id;

-- name: account_delete
DELETE FROM accounts WHERE tenant_id = :tenant_id AND id = :id;

-- name: account_lock_waiting
-- T17: the messages about to be cancelled, locked in pk order before their events are
-- written (unlocked, one deleted meanwhile broke the events' foreign key: a 500).
SELECT pk FROM messages
 WHERE tenant_id = :tenant_id AND account_id = :account_id AND status IN ('queued', 'deferred')
 ORDER BY pk FOR UPDATE;
