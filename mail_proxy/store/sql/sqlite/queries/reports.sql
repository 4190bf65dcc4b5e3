-- The reporter's queries (reports.md §4-§5, messages.md §8). Owned by mail_proxy/reports/.
-- Lists are never passed: acknowledgements run one statement per event with executemany, so
-- PostgreSQL mirrors these with plain parameters.

-- name: report_tenants
-- Tenants that can be reported to, their reporter state, and the newest pending event id
-- (a max() over the events_pending index: one indexed lookup per tenant).
SELECT t.id, t.last_report_at, t.report_failures, t.report_backoff_until, t.report_dnd_until,
       (SELECT max(e.id) FROM message_events e
         WHERE e.tenant_id = t.id AND e.reportable = 1 AND e.reported_at IS NULL)
           AS newest_pending
  FROM tenants t
 WHERE t.active = 1 AND t.client_base_url IS NOT NULL
 ORDER BY t.id;

-- name: report_batch
SELECT e.id, e.message_pk, e.event_type, e.event_ts, e.description, e.metadata,
       e.report_attempts, m.id AS message_id, m.smtp_message_id
  FROM message_events e JOIN messages m ON m.pk = e.message_pk
 WHERE e.tenant_id = :tenant_id AND e.reportable = 1 AND e.reported_at IS NULL
   AND e.id > :after_id
 ORDER BY e.id
 LIMIT :limit;

-- name: report_ack_event
UPDATE message_events SET reported_at = :now WHERE id = :id AND reported_at IS NULL;

-- name: report_reject_event
-- Refused by the client: count it; at the limit it is abandoned (reported_at set).
UPDATE message_events
   SET report_attempts = report_attempts + 1,
       reported_at = CASE WHEN report_attempts + 1 >= :max_rejections THEN :now ELSE NULL END
 WHERE id = :id AND reported_at IS NULL;

-- name: report_settle_message
UPDATE messages SET settled_at = :now
 WHERE pk = :pk AND settled_at IS NULL AND status IN ('sent', 'error', 'cancelled')
   AND NOT EXISTS (SELECT 1 FROM message_events e
                    WHERE e.message_pk = messages.pk AND e.reportable = 1
                      AND e.reported_at IS NULL);

-- name: report_succeeded
UPDATE tenants
   SET last_report_at = :now, report_failures = 0, report_backoff_until = NULL,
       report_dnd_until = :dnd_until
 WHERE id = :tenant_id;

-- name: report_failed
UPDATE tenants SET report_failures = :failures, report_backoff_until = :backoff_until
 WHERE id = :tenant_id;

-- name: report_clear_wait
-- run-now with a tenant: forget its do-not-disturb and backoff.
UPDATE tenants SET report_backoff_until = NULL, report_dnd_until = NULL WHERE id = :tenant_id;

-- name: report_lock_messages
SELECT pk FROM messages WHERE pk IN (SELECT value FROM json_each(:pks)) ORDER BY pk;

-- name: report_endpoint_changed
-- a new URL, path or credentials: the failures and waits were the old endpoint's
UPDATE tenants SET report_failures = 0, report_backoff_until = NULL, report_dnd_until = NULL
 WHERE id = :tenant_id;
