-- Where an account comes from: 'local' (a password kept here) or 'oidc'
-- (an identity provider vouches for it at each login; no password here).
ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'local';
