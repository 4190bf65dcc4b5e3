-- Enqueue, listing and client commands on messages (messages.md §3, api.md §4-5).

-- name: enqueue_tenants
SELECT id, active, default_account_id, client_base_url, suspended_batches,
       (SELECT count(*) FROM suppressions s WHERE s.tenant_id = tenants.id) AS suppressions
  FROM tenants WHERE id IN (SELECT value FROM json_each(:ids));

-- name: enqueue_accounts
SELECT tenant_id, id, is_pec FROM accounts
 WHERE tenant_id IN (SELECT value FROM json_each(:ids));

-- name: enqueue_missing_accounts
-- The guard of an enqueue's insert (api.md §4.1 step 5), in its write transaction: each
-- (tenant, account) pair of :tenant_ids/:account_ids (same length) whose account is gone,
-- deleted since validation, with whether its tenant is still there. An account existing
-- implies its tenant does (foreign key, ON DELETE CASCADE).
SELECT t.value AS tenant_id, a.value AS account_id,
       EXISTS (SELECT 1 FROM tenants WHERE id = t.value) AS tenant_exists
  FROM json_each(:tenant_ids) t JOIN json_each(:account_ids) a ON a.key = t.key
 WHERE NOT EXISTS (SELECT 1 FROM accounts WHERE tenant_id = t.value AND id = a.value);

-- name: message_statuses
SELECT pk, id, status FROM messages
 WHERE tenant_id = :tenant_id AND id IN (SELECT value FROM json_each(:ids));

-- name: message_insert
INSERT INTO messages (tenant_id, id, account_id, status, priority, batch_code, deferred_ts,
                      created_at, updated_at, next_attempt_at, attempts, smtp_message_id,
                      is_pec, has_secrets, payload)
VALUES (:tenant_id, :id, :account_id, :status, :priority, :batch_code, :deferred_ts,
        :now, :now, :next_attempt_at, 0, :smtp_message_id, :is_pec, :has_secrets, :payload);

-- name: message_replace
UPDATE messages
   SET account_id = :account_id, status = :status, priority = :priority,
       batch_code = :batch_code, deferred_ts = :deferred_ts, updated_at = :now,
       next_attempt_at = :next_attempt_at, attempts = 0, lease_owner = NULL,
       lease_expires_at = NULL, last_error = NULL, last_error_code = NULL,
       last_smtp_code = NULL, sent_at = NULL, finished_at = NULL, settled_at = NULL,
       smtp_message_id = :smtp_message_id, is_pec = :is_pec, has_secrets = :has_secrets,
       payload = :payload
 WHERE pk = :pk AND status IN ('queued', 'deferred', 'cancelled');

-- name: count_waiting
SELECT count(*) AS n FROM messages WHERE status IN ('queued', 'deferred');

-- name: event_insert
INSERT INTO message_events (message_pk, tenant_id, event_type, event_ts, description,
                            metadata, reportable)
VALUES (:message_pk, :tenant_id, :event_type, :now, :description, :metadata, :reportable);

-- name: message_get
SELECT * FROM messages WHERE tenant_id = :tenant_id AND id = :id;

-- name: message_events
SELECT id AS event_id, event_type, event_ts, description, reported_at, metadata
  FROM message_events WHERE message_pk = :pk ORDER BY id;

-- name: message_list
SELECT pk, id, tenant_id, account_id, status, priority, batch_code, payload, smtp_message_id,
       created_at, updated_at, deferred_ts, next_attempt_at, attempts, last_error,
       last_error_code, last_smtp_code, sent_at, finished_at, is_pec
  FROM messages
 WHERE (:tenant_id IS NULL OR tenant_id = :tenant_id)
   AND (:status IS NULL OR status = :status)
   AND (:batch_code IS NULL OR batch_code = :batch_code)
   AND (:before_pk IS NULL OR pk < :before_pk)
 ORDER BY pk DESC
 LIMIT :limit;

-- name: message_counts
SELECT status, count(*) AS n FROM messages
 WHERE (:tenant_id IS NULL OR tenant_id = :tenant_id)
 GROUP BY status;

-- name: message_delete
DELETE FROM messages WHERE pk = :pk AND status <> 'sending';

-- name: message_retry_error
UPDATE messages
   SET status = 'queued', attempts = 0, last_error = NULL, last_error_code = NULL,
       last_smtp_code = NULL, finished_at = NULL, settled_at = NULL, sent_at = NULL,
       next_attempt_at = :now, updated_at = :now
 WHERE pk = :pk AND status IN ('error', 'cancelled');

-- name: message_retry_deferred
-- A scheduled message released early is rescheduled to now: its Date header
-- (max(created_at, deferred_ts)) must not lie in the future.
UPDATE messages SET status = 'queued', next_attempt_at = :now, updated_at = :now,
       deferred_ts = CASE WHEN deferred_ts > :now THEN :now ELSE deferred_ts END
 WHERE pk = :pk AND status = 'deferred';

-- name: account_exists
SELECT 1 AS found FROM accounts WHERE tenant_id = :tenant_id AND id = :account_id;

-- name: cleanup_settled
DELETE FROM messages WHERE pk IN (
    SELECT pk FROM messages
     WHERE settled_at IS NOT NULL AND settled_at < :before
       AND (:tenant_id IS NULL OR tenant_id = :tenant_id)
       AND status IN ('sent', 'error', 'cancelled')
       AND NOT EXISTS (SELECT 1 FROM message_events e
                        WHERE e.message_pk = messages.pk AND e.reportable = 1
                          AND e.reported_at IS NULL)
     LIMIT :limit);

-- name: pending_count_tenant
SELECT count(*) AS n FROM messages
 WHERE tenant_id = :tenant_id AND status IN ('queued', 'deferred')
   AND (:batch_code IS NULL OR batch_code = :batch_code);
