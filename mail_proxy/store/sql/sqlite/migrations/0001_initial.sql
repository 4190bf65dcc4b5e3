-- mail-proxy schema 1 (data.md §2). A released migration is never edited.
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
    active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    suspended_batches TEXT NOT NULL DEFAULT '[]',
    api_key_hash TEXT UNIQUE,
    api_key_expires_at INTEGER,
    api_key_created_at INTEGER,
    last_report_at INTEGER,
    report_backoff_until INTEGER,
    report_dnd_until INTEGER,
    report_failures INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE accounts (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    username TEXT,
    password TEXT,
    tls_mode TEXT NOT NULL CHECK (tls_mode IN ('tls', 'starttls', 'none')),
    tls_verify INTEGER NOT NULL DEFAULT 1 CHECK (tls_verify IN (0, 1)),
    tls_ca_file TEXT,
    max_connections INTEGER,
    batch_size INTEGER,
    ttl INTEGER,
    limit_per_minute INTEGER,
    limit_per_hour INTEGER,
    limit_per_day INTEGER,
    limit_behavior TEXT NOT NULL DEFAULT 'defer' CHECK (limit_behavior IN ('defer', 'reject')),
    is_pec INTEGER NOT NULL DEFAULT 0 CHECK (is_pec IN (0, 1)),
    imap_host TEXT,
    imap_port INTEGER NOT NULL DEFAULT 993,
    imap_user TEXT,
    imap_password TEXT,
    imap_folder TEXT NOT NULL DEFAULT 'INBOX',
    imap_tls INTEGER NOT NULL DEFAULT 1 CHECK (imap_tls IN (0, 1)),
    imap_uidvalidity INTEGER,
    imap_last_poll_at INTEGER,
    imap_last_uid INTEGER NOT NULL DEFAULT 0,
    throttle_level INTEGER NOT NULL DEFAULT 0,
    throttle_until INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (tenant_id, id)
);

CREATE TABLE messages (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'deferred', 'sending', 'sent', 'error', 'cancelled')),
    priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 3),
    batch_code TEXT,
    deferred_ts INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    next_attempt_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_at INTEGER,
    last_error TEXT,
    last_error_code TEXT,
    last_smtp_code INTEGER,
    sent_at INTEGER,
    finished_at INTEGER,
    settled_at INTEGER,
    smtp_message_id TEXT NOT NULL,
    is_pec INTEGER NOT NULL DEFAULT 0 CHECK (is_pec IN (0, 1)),
    pec_deadline_at INTEGER,
    has_secrets INTEGER NOT NULL DEFAULT 0 CHECK (has_secrets IN (0, 1)),
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
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_pk INTEGER NOT NULL REFERENCES messages (pk) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_ts INTEGER NOT NULL,
    description TEXT,
    metadata TEXT,
    reportable INTEGER NOT NULL CHECK (reportable IN (0, 1)),
    reported_at INTEGER,
    report_attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_message ON message_events (message_pk, id);
CREATE INDEX events_pending ON message_events (tenant_id, id)
    WHERE reportable = 1 AND reported_at IS NULL;

CREATE TABLE send_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    account_id TEXT NOT NULL,
    message_pk INTEGER,
    sent_at INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'sent'))
);
CREATE INDEX send_log_account ON send_log (tenant_id, account_id, sent_at);
CREATE INDEX send_log_tenant ON send_log (tenant_id, sent_at);
CREATE INDEX send_log_time ON send_log (sent_at);

CREATE TABLE command_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command_ts INTEGER NOT NULL,
    actor TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    tenant_id TEXT,
    payload TEXT,
    response_status INTEGER,
    response_body TEXT
);
CREATE INDEX command_log_time ON command_log (command_ts);
CREATE INDEX command_log_tenant ON command_log (tenant_id, id);

CREATE TABLE instance (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    settings TEXT NOT NULL DEFAULT '{}',
    settings_version INTEGER NOT NULL DEFAULT 0,
    bounce_imap_password TEXT,
    instance_secret TEXT,
    bounce_uidvalidity INTEGER,
    bounce_last_poll_at INTEGER,
    bounce_last_uid INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
INSERT INTO instance (id, created_at, updated_at)
VALUES (1, CAST(strftime('%s', 'now') AS INTEGER), CAST(strftime('%s', 'now') AS INTEGER));

CREATE TABLE storages (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    protocol TEXT NOT NULL,
    config TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE suppressions (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    reason TEXT,
    source TEXT NOT NULL CHECK (source IN ('bounce', 'manual')),
    bounce_status TEXT,
    message_pk INTEGER,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, address)
);

CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE large_files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    message_pk INTEGER,
    storage_url TEXT NOT NULL,
    storage_options TEXT,
    object_path TEXT NOT NULL,
    filename TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    deleted_at INTEGER
);
CREATE INDEX large_files_expiry ON large_files (expires_at) WHERE deleted_at IS NULL;
