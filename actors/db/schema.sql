-- userhub schema. Applied idempotently by `python -m actors.dbsetup`.
-- Every statement is safe to run again on a database that already has it.

CREATE TABLE IF NOT EXISTS users (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    username      VARCHAR(30)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    nickname      VARCHAR(30)  NOT NULL,
    password_hash VARCHAR(160) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    avatar_key    VARCHAR(72)  CHARACTER SET ascii COLLATE ascii_bin NULL,
    version       INT UNSIGNED NOT NULL DEFAULT 1,
    created_at    DOUBLE       NOT NULL,
    updated_at    DOUBLE       NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_users_username (username),
    KEY ix_users_avatar (avatar_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- The picture sweeper asks which stored pictures some user references
-- (AvatarsInUse): one index probe per key instead of a scan of every user. Added
-- here too for a users table made before the index was part of the table above.
CREATE INDEX IF NOT EXISTS ix_users_avatar ON users (avatar_key);

-- Sessions: only the SHA-256 of the token is stored, never the token.
CREATE TABLE IF NOT EXISTS sessions (
    token_hash BINARY(32)      NOT NULL,
    user_id    BIGINT UNSIGNED NOT NULL,
    created_at DOUBLE          NOT NULL,
    last_seen  DOUBLE          NOT NULL,
    expires_at DOUBLE          NOT NULL,
    PRIMARY KEY (token_hash),
    KEY ix_sessions_user (user_id),
    KEY ix_sessions_expires (expires_at)
) ENGINE=InnoDB;

-- Writes applied, by idempotency key, so a retried write never applies twice.
CREATE TABLE IF NOT EXISTS applied_writes (
    idempotency_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id         BIGINT UNSIGNED NOT NULL,
    applied_at      DOUBLE          NOT NULL,
    PRIMARY KEY (idempotency_key),
    KEY ix_applied_writes_at (applied_at)
) ENGINE=InnoDB;
