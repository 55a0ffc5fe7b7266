-- Remote application entities: from the config file (source 'config') or
-- managed through the REST API (source 'api').
CREATE TABLE peers (
    ae_title    TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    port        BIGINT NOT NULL,
    tls         BIGINT NOT NULL DEFAULT 0,
    services    TEXT NOT NULL,
    source      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
