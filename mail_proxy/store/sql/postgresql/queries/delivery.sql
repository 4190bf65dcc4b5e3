-- The dispatcher's queries (delivery.md §2, §6, §7; messages.md §6), PostgreSQL twin of
-- sqlite/queries/delivery.sql: selections that pick rows for an update lock them with
-- FOR UPDATE SKIP LOCKED, and every update re-checks the status it expects. A picking
-- subquery with a LIMIT sits in a MATERIALIZED CTE: inside `pk IN (...)` the planner may run
-- it more than once, and each run skips the rows the previous one locked, so an update could
-- take more rows than its LIMIT (a claim of 5 took 7). The CTE names its column picked_pk
-- so that every other name in the UPDATE is unambiguously a column of messages.

-- name: promote_due
WITH picked (picked_pk) AS MATERIALIZED (
    SELECT pk FROM messages
     WHERE status = 'deferred' AND next_attempt_at <= :now
     ORDER BY next_attempt_at LIMIT 10000
       FOR UPDATE SKIP LOCKED)
UPDATE messages SET status = 'queued', updated_at = :now
  FROM picked
 WHERE pk = picked_pk AND status = 'deferred';

-- name: next_due_at
SELECT min(next_attempt_at) AS due FROM messages WHERE status = 'deferred';

-- name: dispatch_accounts
SELECT a.tenant_id, a.id AS account_id, t.suspended_batches, a.pk AS account_pk,
       a.updated_at AS account_changed_at, t.updated_at AS tenant_changed_at
  FROM accounts a JOIN tenants t ON t.id = a.tenant_id
 WHERE t.active AND t.suspended_batches <> '["*"]'
   AND (a.throttle_until IS NULL OR a.throttle_until <= :now)
   AND EXISTS (SELECT 1 FROM messages m
                WHERE m.status = 'queued' AND m.tenant_id = a.tenant_id
                  AND m.account_id = a.id);

-- name: claim_account
WITH picked (picked_pk) AS MATERIALIZED (
    SELECT pk FROM messages
     WHERE status = 'queued' AND tenant_id = :tenant_id AND account_id = :account_id
       AND (batch_code IS NULL
            OR batch_code <> ALL(:suspended::text[]))
     ORDER BY priority, created_at, pk
     LIMIT :n
       FOR UPDATE SKIP LOCKED)
UPDATE messages
   SET status = 'sending', lease_owner = :me, lease_expires_at = :now::bigint + :lease::bigint,
       updated_at = :now
  FROM picked
 WHERE pk = picked_pk AND status = 'queued'
RETURNING pk, id, tenant_id, account_id, priority, batch_code, created_at, deferred_ts,
          attempts, smtp_message_id, is_pec, has_secrets, payload;

-- name: claim_immediate
WITH picked (picked_pk) AS MATERIALIZED (
    SELECT m.pk FROM messages m
      JOIN tenants t ON t.id = m.tenant_id
      LEFT JOIN accounts a ON a.tenant_id = m.tenant_id AND a.id = m.account_id
     WHERE m.status = 'queued' AND m.priority = 0 AND t.active
       AND t.suspended_batches <> '["*"]'
       AND (m.batch_code IS NULL
            OR NOT (t.suspended_batches::jsonb ? m.batch_code))
       AND (a.throttle_until IS NULL OR a.throttle_until <= :now)
       AND m.tenant_id || '/' || COALESCE(m.account_id, '') <> ALL(:limited::text[])
     ORDER BY m.created_at, m.pk
     LIMIT :n
       FOR UPDATE OF m SKIP LOCKED)
UPDATE messages
   SET status = 'sending', lease_owner = :me, lease_expires_at = :now::bigint + :lease::bigint,
       updated_at = :now
  FROM picked
 WHERE pk = picked_pk AND status = 'queued'
RETURNING pk, id, tenant_id, account_id, priority, batch_code, created_at, deferred_ts,
          attempts, smtp_message_id, is_pec, has_secrets, payload;

-- name: lease_renew
-- delivery.md §2.1, with the rows locked in pk order, as outcome batches lock them: the
-- same rows taken in two orders by two transactions deadlock
UPDATE messages m SET lease_expires_at = :now::bigint + :lease::bigint, updated_at = :now
  FROM (SELECT pk FROM messages WHERE status = 'sending' AND lease_owner = :me
         ORDER BY pk FOR UPDATE) AS mine
 WHERE m.pk = mine.pk;

-- name: lease_owned
SELECT pk FROM messages WHERE status = 'sending' AND lease_owner = :me;

-- name: lease_expired
SELECT m.pk, m.id, m.tenant_id, m.account_id, m.attempts, m.lease_owner,
       t.client_base_url IS NOT NULL AS reportable
  FROM messages m JOIN tenants t ON t.id = m.tenant_id
 WHERE m.status = 'sending' AND m.lease_expires_at < :now
 ORDER BY m.lease_expires_at LIMIT 1000
   FOR UPDATE OF m SKIP LOCKED;

-- name: lease_recover
UPDATE messages
   SET status = :status, attempts = attempts + 1, next_attempt_at = :next_attempt_at,
       last_error = :last_error, last_error_code = 'lease_expired',
       lease_owner = NULL, lease_expires_at = NULL, updated_at = :now,
       finished_at = :finished_at, settled_at = :settled_at
 WHERE pk = :pk AND status = 'sending' AND lease_owner = :owner AND lease_expires_at < :now;

-- name: mark_sent
WITH tenant AS (
     -- share-locked: a URL change waits for this outcome, then sees its event (§6)
     SELECT coalesce(client_base_url, '') <> '' AS reportable FROM tenants
      WHERE id = :tenant_id FOR SHARE)
UPDATE messages
   SET status = 'sent', attempts = attempts + 1, sent_at = :now, finished_at = :now,
       last_smtp_code = :smtp_code, next_attempt_at = NULL, lease_owner = NULL,
       lease_expires_at = NULL, updated_at = :now,
       settled_at = CASE WHEN coalesce((SELECT reportable FROM tenant), false) THEN NULL ELSE :now::bigint END,
       pec_deadline_at = :pec_deadline_at
 WHERE pk = :pk AND status = 'sending' AND lease_owner = :me;

-- name: mark_error
WITH tenant AS (
     -- share-locked: a URL change waits for this outcome, then sees its event (§6)
     SELECT coalesce(client_base_url, '') <> '' AS reportable FROM tenants
      WHERE id = :tenant_id FOR SHARE)
UPDATE messages
   SET status = 'error', attempts = attempts + :attempted, finished_at = :now,
       last_error = :error, last_error_code = :code,
       last_smtp_code = CASE WHEN :attempted = 1 THEN :smtp_code
                           ELSE coalesce(:smtp_code, last_smtp_code) END, next_attempt_at = NULL,
       lease_owner = NULL, lease_expires_at = NULL, updated_at = :now,
       settled_at = CASE WHEN coalesce((SELECT reportable FROM tenant), false) THEN NULL ELSE :now::bigint END
 WHERE pk = :pk AND status = 'sending' AND lease_owner = :me;

-- name: mark_deferred
WITH tenant AS (
     -- share-locked: a URL change waits for this outcome, then sees its event (§6)
     SELECT coalesce(client_base_url, '') <> '' AS reportable FROM tenants
      WHERE id = :tenant_id FOR SHARE)
UPDATE messages
   SET status = 'deferred', attempts = attempts + :attempted, next_attempt_at = :next_attempt_at,
       last_error = coalesce(:error, last_error), last_error_code = coalesce(:code, last_error_code),
       last_smtp_code = CASE WHEN :attempted = 1 THEN :smtp_code
                           ELSE coalesce(:smtp_code, last_smtp_code) END,
       lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
 WHERE pk = :pk AND status = 'sending' AND lease_owner = :me
   AND (SELECT count(*) FROM tenant) >= 0;  -- a WITH query runs only when it is read

-- name: mark_released
UPDATE messages
   SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
 WHERE pk = :pk AND status = 'sending' AND lease_owner = :me;

-- name: release_all_mine
UPDATE messages
   SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
 WHERE status = 'sending' AND lease_owner = :me AND pk = ANY(:pks::bigint[]);

-- name: dispatch_account_config
SELECT a.*, t.active AS tenant_active, t.suspended_batches, t.client_base_url,
       t.rate_limits AS tenant_rate_limits,
       (SELECT count(*) FROM suppressions s WHERE s.tenant_id = a.tenant_id)
           AS suppression_count
  FROM accounts a JOIN tenants t ON t.id = a.tenant_id
 WHERE a.tenant_id = :tenant_id AND a.id = :account_id;

-- name: send_log_count_account
SELECT count(*) AS n FROM send_log
 WHERE tenant_id = :tenant_id AND account_id = :account_id AND sent_at > :since;

-- name: send_log_count_tenant
SELECT count(*) AS n FROM send_log WHERE tenant_id = :tenant_id AND sent_at > :since;

-- name: send_log_nth_account
SELECT sent_at FROM send_log
 WHERE tenant_id = :tenant_id AND account_id = :account_id AND sent_at > :since
 ORDER BY sent_at DESC LIMIT 1 OFFSET :offset;

-- name: send_log_nth_tenant
SELECT sent_at FROM send_log WHERE tenant_id = :tenant_id AND sent_at > :since
 ORDER BY sent_at DESC LIMIT 1 OFFSET :offset;

-- name: send_log_reserve
INSERT INTO send_log (tenant_id, account_id, message_pk, sent_at, state)
VALUES (:tenant_id, :account_id, :message_pk, :now, 'reserved')
RETURNING id;

-- name: send_log_confirm
UPDATE send_log SET state = 'sent' WHERE id = :id;

-- name: send_log_cancel
DELETE FROM send_log WHERE id = :id;

-- name: send_log_prune
DELETE FROM send_log WHERE sent_at < :before;

-- name: lock_tenant_row
-- NO KEY UPDATE, not UPDATE: a send_log insert checks its foreign key with KEY SHARE on this
-- row, which UPDATE blocks (a reservation without a tenant limit, holding its account row,
-- deadlocked against one with it)
SELECT id FROM tenants WHERE id = :tenant_id FOR NO KEY UPDATE;

-- name: lock_account_row
SELECT pk FROM accounts WHERE tenant_id = :tenant_id AND id = :account_id FOR UPDATE;

-- name: account_throttle
UPDATE accounts
   SET throttle_level = LEAST(throttle_level + 1, 6),
       throttle_until = :now::bigint
                        + LEAST(:base::bigint * (1::bigint << LEAST(throttle_level, 5)::int),
                                :max_delay::bigint),
       updated_at = :now
 WHERE tenant_id = :tenant_id AND id = :account_id
RETURNING throttle_level, throttle_until;

-- name: account_unthrottle_step
UPDATE accounts SET throttle_level = GREATEST(throttle_level - 1, 0), updated_at = :now
 WHERE tenant_id = :tenant_id AND id = :account_id AND throttle_level > 0;

-- name: queue_gauges
SELECT status, count(*) AS n FROM messages GROUP BY status;

-- name: sent_since
SELECT count(*) AS n FROM messages WHERE status = 'sent' AND sent_at > :since;

-- name: oldest_queued
SELECT min(created_at) AS oldest FROM messages WHERE status = 'queued';

-- name: tenant_fetch_context
SELECT client_base_url, client_attachment_path, client_auth, created_at FROM tenants
 WHERE id = :tenant_id;

-- name: report_pending_counts
SELECT tenant_id, count(*) AS n FROM message_events
 WHERE reportable AND reported_at IS NULL GROUP BY tenant_id;

-- name: all_account_keys
SELECT tenant_id, id FROM accounts ORDER BY tenant_id, id;

-- name: outcome_event_insert
-- the event of an outcome, reportable when the tenant has a URL now (reports.md §6); the
-- tenant row is share-locked by the outcome's update in the same transaction
INSERT INTO message_events (message_pk, tenant_id, event_type, event_ts, description,
                            metadata, reportable)
VALUES (:message_pk, :tenant_id, :event_type, :now, :description, :metadata,
        coalesce((SELECT coalesce(client_base_url, '') <> '' FROM tenants
                   WHERE id = :tenant_id), false));

-- name: send_log_backfill_account
-- Sends made while no limit applied wrote no row (ratelimit.reserve): when a limit is set,
-- the day's sends of the account are logged as they would have been, so that they count.
INSERT INTO send_log (tenant_id, account_id, message_pk, sent_at, state)
SELECT m.tenant_id, m.account_id, m.pk, m.sent_at, 'sent' FROM messages m
 WHERE m.tenant_id = :tenant_id AND m.account_id = :account_id AND m.status = 'sent'
   AND m.sent_at > :since
   AND NOT EXISTS (SELECT 1 FROM send_log s
                    WHERE s.tenant_id = m.tenant_id AND s.account_id = m.account_id
                      AND s.sent_at BETWEEN m.sent_at - 3600 AND m.sent_at
                      AND s.message_pk = m.pk);

-- name: send_log_backfill_tenant
INSERT INTO send_log (tenant_id, account_id, message_pk, sent_at, state)
SELECT m.tenant_id, m.account_id, m.pk, m.sent_at, 'sent' FROM messages m
 WHERE m.tenant_id = :tenant_id AND m.status = 'sent' AND m.sent_at > :since
   AND NOT EXISTS (SELECT 1 FROM send_log s
                    WHERE s.tenant_id = m.tenant_id AND s.account_id = m.account_id
                      AND s.sent_at BETWEEN m.sent_at - 3600 AND m.sent_at
                      AND s.message_pk = m.pk);
