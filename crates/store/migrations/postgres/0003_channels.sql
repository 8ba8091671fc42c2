-- Channels added through the admin API or CLI (gengate.toml's are never
-- stored), and secrets the gateway makes for itself.

-- `spec` is the channel's settings as JSON (gengate_core::ChannelSpec),
-- credentials included in the clear: like the keys' webhook signing secrets,
-- they are secrets the database already has to be trusted with.
CREATE TABLE channels (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Random secrets by name (e.g. the key upstream callback URLs are signed
-- with), made on first use and shared by every instance on this store.
CREATE TABLE gateway_secrets (
    name   TEXT PRIMARY KEY,
    value  BYTEA NOT NULL
);
