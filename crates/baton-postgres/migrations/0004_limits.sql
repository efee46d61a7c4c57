-- Rate limits shared by every instance (`PgLimiter`): the generic cell rate algorithm, one row
-- per bucket and key holding its theoretical arrival time. A row whose time has passed is a
-- full bucket, removed by the limiter's bounded sweep. No index on `tat`, so each check is a
-- heap-only update.
CREATE TABLE baton_limits (
    bucket text        NOT NULL,
    key    text        NOT NULL,
    tat    timestamptz NOT NULL,
    PRIMARY KEY (bucket, key)
);
