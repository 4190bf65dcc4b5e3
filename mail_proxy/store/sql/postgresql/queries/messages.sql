-- Enqueue, listing and client commands on messages (messages.md §3, api.md §4-5).

-- name: enqueue_tenants
SELECT id, active, default_account_id, client_base_url, suspended_batches,
       (SELECT count(*) FROM suppressions s WHERE s.tenant_id = tenants.id) AS suppressions
  FROM tenants WHERE id = ANY(:ids::text[]);

-- name: enqueue_accounts
SELECT tenant_id, id, is_pec FROM accounts
 WHERE tenant_id = ANY(:ids::text[]);

-- name: enqueue_missing_accounts
-- The guard of an enqueue's insert (api.md §4.1 step 5), in its write transaction: each
-- (tenant, account) pair of :tenant_ids/:account_ids (same length) whose account is gone,
-- with whether its tenant is still there. What it finds stays locked FOR KEY SHARE (as the
-- messages' foreign key locks a tenant) until the commit: a DELETE of the account or the
-- tenant (FOR UPDATE, then the delete) either waits for this commit and then cancels or
-- deletes the new messages too, or commits first, and the row is then not found here.
-- The account's lookup needs the tenant's, so a tenant is locked before its accounts, in
-- the order of DELETE /tenant: the two cannot deadlock. Lateral lookups rather than CTEs:
-- half the time (0.2 against 0.4 ms), on a path taken by every enqueue.
SELECT w.tenant_id, w.account_id, t.id IS NOT NULL AS tenant_exists
  FROM unnest(:tenant_ids::text[], :account_ids::text[]) AS w (tenant_id, account_id)
  LEFT JOIN LATERAL (SELECT id FROM tenants WHERE id = w.tenant_id FOR KEY SHARE) t ON true
  LEFT JOIN LATERAL (SELECT id FROM accounts WHERE tenant_id = t.id AND id = w.account_id
                        FOR KEY SHARE) a ON true
 WHERE a.id IS NULL;

-- name: message_statuses
-- Locked in pk order, as every writer of several messages locks them: two requests naming
-- the same ids in different orders deadlocked.
SELECT pk, id, status FROM messages
 WHERE tenant_id = :tenant_id AND id = ANY(:ids::text[])
 ORDER BY pk FOR UPDATE;

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
 WHERE (:tenant_id::text IS NULL OR tenant_id = :tenant_id)
   AND (:status::text IS NULL OR status = :status)
   AND (:batch_code::text IS NULL OR batch_code = :batch_code)
   AND (:before_pk::bigint IS NULL OR pk < :before_pk)
 ORDER BY pk DESC
 LIMIT :limit;

-- name: message_counts
SELECT status, count(*) AS n FROM messages
 WHERE (:tenant_id::text IS NULL OR tenant_id = :tenant_id)
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
       AND (:tenant_id::text IS NULL OR tenant_id = :tenant_id)
       AND status IN ('sent', 'error', 'cancelled')
       AND NOT EXISTS (SELECT 1 FROM message_events e
                        WHERE e.message_pk = messages.pk AND e.reportable
                          AND e.reported_at IS NULL)
     LIMIT :limit);

-- name: pending_count_tenant
SELECT count(*) AS n FROM messages
 WHERE tenant_id = :tenant_id AND status IN ('queued', 'deferred')
   AND (:batch_code::text IS NULL OR batch_code = :batch_code);
