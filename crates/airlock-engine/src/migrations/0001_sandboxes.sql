-- One row per named sandbox. Times are Unix seconds. `state` is a lifecycle::SandboxState name.
CREATE TABLE sandboxes (
    name           TEXT PRIMARY KEY,
    id             TEXT UNIQUE NOT NULL,
    state          TEXT NOT NULL,
    spec_json      TEXT NOT NULL,
    backend        TEXT,
    image          TEXT,
    profile        TEXT,
    supervisor_pid INTEGER,
    created_at     INTEGER,
    started_at     INTEGER,
    stopped_at     INTEGER,
    last_error     TEXT
);
