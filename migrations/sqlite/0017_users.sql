-- People who log in to the HTTP port. roles is a comma-separated list of
-- admin, technologist, radiologist, referring, auditor. password_hash is
-- an argon2id PHC string. A name is never reused for another person, so
-- accounts are disabled, not deleted, and the audit trail stays readable.
CREATE TABLE users (
    name                TEXT PRIMARY KEY,
    roles               TEXT NOT NULL,
    password_hash       TEXT NOT NULL,
    must_change         BIGINT NOT NULL DEFAULT 0,
    disabled            BIGINT NOT NULL DEFAULT 0,
    failed_logins       BIGINT NOT NULL DEFAULT 0,
    locked_until        BIGINT NOT NULL DEFAULT 0,
    physician_name      TEXT NOT NULL DEFAULT '',
    created_at          BIGINT NOT NULL,
    password_changed_at BIGINT NOT NULL
);

-- Browser sessions. Only the SHA-256 of the cookie is kept, so a copy of
-- the index does not let anyone in.
CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    user_name   TEXT NOT NULL REFERENCES users (name),
    csrf        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_name);

-- API tokens for scripts: named, limited to some of the user's roles,
-- expiring and revocable. Only the SHA-256 of the secret is kept.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name    TEXT NOT NULL REFERENCES users (name),
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL UNIQUE,
    roles        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT NOT NULL DEFAULT 0,
    UNIQUE (user_name, name)
);
