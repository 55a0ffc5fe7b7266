-- Studies shared with a user beyond those that name them as referring
-- physician: a consultant asked for a second opinion, say. Keyed by
-- study UID so a share outlives a patient merge; expires_at 0 is never.
CREATE TABLE study_shares (
    study_uid   TEXT NOT NULL,
    user_name   TEXT NOT NULL REFERENCES users (name),
    shared_by   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (study_uid, user_name)
);
CREATE INDEX study_shares_user ON study_shares (user_name);
