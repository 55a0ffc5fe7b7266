-- Remote application entities: from the config file (source 'config') or
-- managed through the REST API (source 'api').
CREATE TABLE peers (
    ae_title    TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    port        INTEGER NOT NULL,
    tls         INTEGER NOT NULL DEFAULT 0,
    services    TEXT NOT NULL,
    source      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
