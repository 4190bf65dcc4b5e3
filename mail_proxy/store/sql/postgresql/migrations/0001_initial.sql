-- mail-proxy schema 1 for PostgreSQL (data.md §1-2): the same tables, columns and index names
-- as sqlite/migrations/0001_initial.sql. A released migration is never edited.
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT,
    client_base_url TEXT,
    client_sync_path TEXT NOT NULL DEFAULT '/mail-proxy/sync',
    client_attachment_path TEXT NOT NULL DEFAULT '/mail-proxy/attachments',
    client_auth TEXT,
    signing_secret TEXT,
    rate_limits TEXT,
    large_file_config TEXT,
    default_account_id TEXT,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    suspended_batches TEXT NOT NULL DEFAULT '[]',
    api_key_hash TEXT UNIQUE,
    api_key_expires_at BIGINT,
    api_key_created_at BIGINT,
    last_report_at BIGINT,
    report_backoff_until BIGINT,
    report_dnd_until BIGINT,
    report_failures BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE accounts (
    pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    host TEXT NOT NULL,
    port BIGINT NOT NULL,
    username TEXT,
    password TEXT,
    tls_mode TEXT NOT NULL CHECK (tls_mode IN ('tls', 'starttls', 'none')),
    tls_verify BOOLEAN NOT NULL DEFAULT TRUE,
    tls_ca_file TEXT,
    max_connections BIGINT,
    batch_size BIGINT,
    ttl BIGINT,
    limit_per_minute BIGINT,
    limit_per_hour BIGINT,
    limit_per_day BIGINT,
    limit_behavior TEXT NOT NULL DEFAULT 'defer' CHECK (limit_behavior IN ('defer', 'reject')),
    is_pec BOOLEAN NOT NULL DEFAULT FALSE,
    imap_host TEXT,
    imap_port BIGINT NOT NULL DEFAULT 993,
    imap_user TEXT,
    imap_password TEXT,
    imap_folder TEXT NOT NULL DEFAULT 'INBOX',
    imap_tls BOOLEAN NOT NULL DEFAULT TRUE,
    imap_uidvalidity BIGINT,
    imap_last_poll_at BIGINT,
    imap_last_uid BIGINT NOT NULL DEFAULT 0,
    throttle_level BIGINT NOT NULL DEFAULT 0,
    throttle_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, id)
);

CREATE TABLE messages (
    pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'deferred', 'sending', 'sent', 'error', 'cancelled')),
    priority BIGINT NOT NULL CHECK (priority BETWEEN 0 AND 3),
    batch_code TEXT,
    deferred_ts BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    next_attempt_at BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    last_error TEXT,
    last_error_code TEXT,
    last_smtp_code BIGINT,
    sent_at BIGINT,
    finished_at BIGINT,
    settled_at BIGINT,
    smtp_message_id TEXT NOT NULL,
    is_pec BOOLEAN NOT NULL DEFAULT FALSE,
    pec_deadline_at BIGINT,
    has_secrets BOOLEAN NOT NULL DEFAULT FALSE,
    payload TEXT NOT NULL
);
CREATE UNIQUE INDEX messages_tenant_id ON messages (tenant_id, id);
CREATE INDEX messages_claim ON messages (tenant_id, account_id, priority, created_at, pk)
    WHERE status = 'queued';
CREATE INDEX messages_immediate ON messages (created_at, pk)
    WHERE status = 'queued' AND priority = 0;
CREATE INDEX messages_due ON messages (next_attempt_at) WHERE status = 'deferred';
CREATE INDEX messages_lease ON messages (lease_expires_at) WHERE status = 'sending';
CREATE INDEX messages_account_status ON messages (tenant_id, account_id, status);
CREATE INDEX messages_tenant_list ON messages (tenant_id, pk);
CREATE INDEX messages_tenant_status ON messages (tenant_id, status, pk);
CREATE INDEX messages_batch ON messages (tenant_id, batch_code) WHERE batch_code IS NOT NULL;
CREATE INDEX messages_settled ON messages (settled_at) WHERE settled_at IS NOT NULL;
CREATE INDEX messages_smtp_id ON messages (smtp_message_id);
CREATE INDEX messages_pec_deadline ON messages (pec_deadline_at)
    WHERE pec_deadline_at IS NOT NULL;

CREATE TABLE message_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_pk BIGINT NOT NULL REFERENCES messages (pk) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_ts BIGINT NOT NULL,
    description TEXT,
    metadata TEXT,
    reportable BOOLEAN NOT NULL,
    reported_at BIGINT,
    report_attempts BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX events_message ON message_events (message_pk, id);
CREATE INDEX events_pending ON message_events (tenant_id, id)
    WHERE reportable AND reported_at IS NULL;

CREATE TABLE send_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    account_id TEXT NOT NULL,
    message_pk BIGINT,
    sent_at BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'sent'))
);
CREATE INDEX send_log_account ON send_log (tenant_id, account_id, sent_at);
CREATE INDEX send_log_tenant ON send_log (tenant_id, sent_at);
CREATE INDEX send_log_time ON send_log (sent_at);

CREATE TABLE command_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    command_ts BIGINT NOT NULL,
    actor TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    tenant_id TEXT,
    payload TEXT,
    response_status BIGINT,
    response_body TEXT
);
CREATE INDEX command_log_time ON command_log (command_ts);
CREATE INDEX command_log_tenant ON command_log (tenant_id, id);

CREATE TABLE instance (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    settings TEXT NOT NULL DEFAULT '{}',
    settings_version BIGINT NOT NULL DEFAULT 0,
    bounce_imap_password TEXT,
    instance_secret TEXT,
    bounce_uidvalidity BIGINT,
    bounce_last_poll_at BIGINT,
    bounce_last_uid BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO instance (id, created_at, updated_at)
VALUES (1, extract(epoch FROM now())::BIGINT, extract(epoch FROM now())::BIGINT);

CREATE TABLE storages (
    pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    protocol TEXT NOT NULL,
    config TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE suppressions (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    reason TEXT,
    source TEXT NOT NULL CHECK (source IN ('bounce', 'manual')),
    bounce_status TEXT,
    message_pk BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, address)
);

CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE large_files (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    message_pk BIGINT,
    storage_url TEXT NOT NULL,
    storage_options TEXT,
    object_path TEXT NOT NULL,
    filename TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX large_files_expiry ON large_files (expires_at) WHERE deleted_at IS NULL;
