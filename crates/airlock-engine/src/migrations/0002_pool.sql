-- The warm pool (docs/design/warm-pool.md). A pool is a member spec kept at `size` pre-started
-- sandboxes; `key` is the hash of that spec with every claim-bound field cleared.
CREATE TABLE pools (
    key        TEXT PRIMARY KEY,
    spec_json  TEXT NOT NULL,
    size       INTEGER NOT NULL,
    hits       INTEGER NOT NULL DEFAULT 0,
    misses     INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
-- One row per member. `state`: warming | ready | claimed | released | draining. A claim is one
-- UPDATE from `ready` to `claimed` naming the claiming process (pid + start time).
CREATE TABLE pool_members (
    name          TEXT PRIMARY KEY,
    id            TEXT UNIQUE NOT NULL,
    pool_key      TEXT NOT NULL,
    state         TEXT NOT NULL,
    claimer_pid   INTEGER,
    claimer_start INTEGER,
    created_at    INTEGER NOT NULL,
    ready_at      INTEGER,
    claimed_at    INTEGER
);
CREATE INDEX pool_members_ready ON pool_members (pool_key, state);
-- Claim latencies (microseconds), the newest kept per pool for `daemon status`.
CREATE TABLE pool_claims (
    pool_key TEXT NOT NULL,
    at       INTEGER NOT NULL,
    micros   INTEGER NOT NULL
);
