-- name: instance_get
SELECT * FROM instance WHERE id = 1;

-- name: instance_set_settings
UPDATE instance SET settings = :settings, settings_version = settings_version + 1,
       updated_at = :now
 WHERE id = 1;

-- name: lease_acquire
INSERT INTO leases (name, owner, expires_at) VALUES (:name, :me, :now + :ttl)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
 WHERE leases.expires_at < :now OR leases.owner = :me;

-- name: lease_release
DELETE FROM leases WHERE name = :name AND owner = :me;

-- name: command_log_prune
DELETE FROM command_log WHERE command_ts < :before;

-- name: instance_secret_init
UPDATE instance SET instance_secret = :secret WHERE id = 1 AND instance_secret IS NULL;
