-- The revocation log every instance reads (`PgRevocationFeed`): one row per revocation, kept
-- for the access-token lifetime (older rows are trimmed a batch at a time). Either a session's
-- tokens, or a user's tokens issued before a time (logout everywhere).
CREATE TABLE baton_revocations (
    seq         bigserial   PRIMARY KEY,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    session_id  text,
    sub         text,
    -- Seconds since the epoch, compared with the tokens' `iat`.
    before      bigint,
    CHECK ((session_id IS NOT NULL) <> (sub IS NOT NULL AND before IS NOT NULL))
);

-- The trim, oldest first; and the re-read of the last seconds.
CREATE INDEX baton_revocations_recorded_at ON baton_revocations (recorded_at);
