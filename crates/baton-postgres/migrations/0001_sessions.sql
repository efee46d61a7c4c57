-- baton's refresh-token sessions. Every name here starts with `baton_`: a store made with
-- another table prefix applies this file with that prefix in its place.
--
-- One row per session: live, or revoked and kept as a tombstone until `revoked_until` (so its
-- token is told "revoked", not "expired"). Rows past `expires_at` (live) or `revoked_until`
-- (tombstones) are dead and removed by the store's bounded sweep.
CREATE TABLE baton_sessions (
    -- The 24-byte session id (a 9-byte tag of the user id, then 15 random bytes).
    id                  bytea       PRIMARY KEY,
    user_id             text        NOT NULL,
    -- The live refresh token's generation.
    generation          bigint      NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL,
    last_used_at        timestamptz NOT NULL,
    -- The latest rotation (NULL before the first).
    rotated_at          timestamptz,
    -- The idle deadline (never past the absolute one).
    expires_at          timestamptz NOT NULL,
    absolute_expires_at timestamptz NOT NULL,
    -- The device: its address, user agent, name and identifier, as last seen.
    ip                  inet,
    user_agent          text,
    device_name         text,
    device_id           text,
    -- The network last seen of each family, at the policy's prefix length.
    network_v4          cidr,
    network_v6          cidr,
    network_changed_at  timestamptz,
    -- The latest authentication: when, how (RFC 8176 amr), and at what level (acr).
    auth_time           timestamptz NOT NULL,
    amr                 text[]      NOT NULL DEFAULT '{}',
    acr                 text,
    -- The thumbprint of the DPoP key the session is bound to.
    dpop_jkt            text,
    -- Revoked: remembered until then, and why (reused, ua_revoked, net_revoked, replaced,
    -- evicted, revoked, revoked_all).
    revoked_until       timestamptz,
    outcome             text,
    -- The id of the latest write (rotation or revocation): a call sent again after a lost
    -- reply is answered with the first try's outcome.
    attempt             bigint,
    CHECK (length(id) = 24)
);

-- A user's live sessions (list, revoke all, the per-user cap).
CREATE INDEX baton_sessions_user ON baton_sessions (user_id) WHERE revoked_until IS NULL;
-- Dead rows, oldest first, for the sweep.
CREATE INDEX baton_sessions_dead_at ON baton_sessions ((coalesce(revoked_until, expires_at)));
