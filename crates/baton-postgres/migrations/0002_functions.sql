-- The two writes that read before they write, each one statement from the application and one
-- transaction here, on the session's row lock (rotation) or the user's advisory lock
-- (creation): no read-then-write race between instances.
--
-- Both take a deadline in the server's clock: a call that reaches the server after it (the
-- server was stalled, and the application has answered 503 already) changes nothing.

-- Rotates a refresh token: the live generation rotates; its immediate parent is graced with
-- the same successor while the policy allows; any other spent generation revokes the session
-- ('reused'); a changed user agent or network is judged by the policy on both paths. Sent
-- again with the same attempt id after a lost reply, it answers what the first try did.
-- Outcomes: rotated, graced, reused, ua_revoked, net_revoked, revoked, expired, invalid,
-- dpop_mismatch; `session` is the row after the rotation (or as revoked).
CREATE FUNCTION baton_rotate(
    p_id bytea,
    p_generation bigint,
    p_now timestamptz,
    p_grace_ms bigint,
    p_idle_ms bigint,
    p_ua_revoke boolean,
    p_user_agent text,
    p_ip inet,
    p_tombstone_ms bigint,
    p_after_use boolean,
    p_attempt bigint,
    p_network_policy text,
    p_network cidr,
    p_dpop_jkt text,
    p_deadline timestamptz
) RETURNS TABLE (outcome text, network_changed boolean, session baton_sessions)
LANGUAGE plpgsql AS $$
DECLARE
    s baton_sessions;
    graced boolean;
    seen cidr;
    moved boolean := false;
    keep timestamptz;
BEGIN
    IF clock_timestamp() > p_deadline THEN
        RAISE EXCEPTION 'the rotation reached the server after its deadline'
            USING ERRCODE = 'BT001';
    END IF;
    SELECT * INTO s FROM baton_sessions AS t WHERE t.id = p_id FOR UPDATE;
    -- Again after the lock: a rotation that waited past its deadline behind another gives up.
    IF clock_timestamp() > p_deadline THEN
        RAISE EXCEPTION 'the rotation waited past its deadline'
            USING ERRCODE = 'BT001';
    END IF;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'expired'::text, false, NULL::baton_sessions;
        RETURN;
    END IF;
    IF s.revoked_until IS NOT NULL THEN
        IF s.revoked_until <= p_now THEN
            RETURN QUERY SELECT 'expired'::text, false, NULL::baton_sessions;
        ELSIF s.attempt = p_attempt AND s.outcome IN ('reused', 'ua_revoked', 'net_revoked') THEN
            RETURN QUERY SELECT s.outcome, false, s;
        ELSE
            RETURN QUERY SELECT 'revoked'::text, false, NULL::baton_sessions;
        END IF;
        RETURN;
    END IF;
    IF s.expires_at <= p_now THEN
        RETURN QUERY SELECT 'expired'::text, false, NULL::baton_sessions;
        RETURN;
    END IF;
    -- A session bound to a DPoP key answers only a request that proves it.
    IF s.dpop_jkt IS NOT NULL AND s.dpop_jkt IS DISTINCT FROM p_dpop_jkt THEN
        RETURN QUERY SELECT 'dpop_mismatch'::text, false, NULL::baton_sessions;
        RETURN;
    END IF;
    IF p_generation > s.generation THEN
        RETURN QUERY SELECT 'invalid'::text, false, NULL::baton_sessions;
        RETURN;
    END IF;
    graced := p_generation + 1 = s.generation AND (
        s.attempt = p_attempt
        OR p_after_use
        OR p_now - s.rotated_at < p_grace_ms * interval '1 millisecond');
    keep := least(s.expires_at, p_now + p_tombstone_ms * interval '1 millisecond');
    IF p_generation < s.generation AND NOT graced THEN
        UPDATE baton_sessions AS t
        SET revoked_until = keep, outcome = 'reused', attempt = p_attempt
        WHERE t.id = p_id;
        RETURN QUERY SELECT 'reused'::text, false, s;
        RETURN;
    END IF;
    -- Checked on the grace path too: a parent coming back from another browser is no more
    -- welcome than the live token would be.
    IF p_ua_revoke AND p_user_agent IS DISTINCT FROM s.user_agent THEN
        UPDATE baton_sessions AS t
        SET revoked_until = keep, outcome = 'ua_revoked', attempt = p_attempt
        WHERE t.id = p_id;
        RETURN QUERY SELECT 'ua_revoked'::text, false, s;
        RETURN;
    END IF;
    -- The network last seen of the request's family, compared at the same prefix length.
    IF p_network IS NOT NULL THEN
        seen := CASE WHEN family(p_network) = 4 THEN s.network_v4 ELSE s.network_v6 END;
        moved := seen IS NOT NULL AND masklen(seen) = masklen(p_network) AND seen <> p_network;
    END IF;
    IF moved AND p_network_policy = 'revoke' THEN
        UPDATE baton_sessions AS t
        SET revoked_until = keep, outcome = 'net_revoked', attempt = p_attempt
        WHERE t.id = p_id;
        RETURN QUERY SELECT 'net_revoked'::text, false, s;
        RETURN;
    END IF;
    IF graced THEN
        RETURN QUERY SELECT 'graced'::text, false, s;
        RETURN;
    END IF;
    UPDATE baton_sessions AS t SET
        generation = s.generation + 1,
        last_used_at = p_now,
        rotated_at = p_now,
        expires_at = least(p_now + p_idle_ms * interval '1 millisecond', s.absolute_expires_at),
        ip = p_ip,
        user_agent = p_user_agent,
        attempt = p_attempt,
        network_v4 = CASE WHEN family(p_network) = 4 THEN p_network ELSE t.network_v4 END,
        network_v6 = CASE WHEN family(p_network) = 6 THEN p_network ELSE t.network_v6 END,
        network_changed_at = CASE WHEN moved AND p_network_policy = 'flag' THEN p_now
                                  ELSE t.network_changed_at END
    WHERE t.id = p_id
    RETURNING t.* INTO s;
    RETURN QUERY SELECT 'rotated'::text, moved, s;
END
$$;

-- Creates a session: the user's live session with the same device id is replaced, then the
-- least recently used live sessions beyond `p_max - 1` are evicted, then the row is written.
-- One user's creations run one at a time (an advisory lock on the user), so the cap holds
-- between instances. Sent again after a lost reply (the row exists), it changes nothing and
-- answers the sessions the first try evicted and replaced.
CREATE FUNCTION baton_create(
    p_id bytea,
    p_user_id text,
    p_now timestamptz,
    p_expires_at timestamptz,
    p_absolute_expires_at timestamptz,
    p_ip inet,
    p_user_agent text,
    p_device_name text,
    p_device_id text,
    p_network cidr,
    p_amr text[],
    p_acr text,
    p_dpop_jkt text,
    p_max bigint,
    p_tombstone_ms bigint,
    p_attempt bigint,
    p_deadline timestamptz
) RETURNS TABLE (evicted bytea[], replaced bytea[])
LANGUAGE plpgsql AS $$
DECLARE
    keep interval := p_tombstone_ms * interval '1 millisecond';
    v_evicted bytea[] := '{}';
    v_replaced bytea[] := '{}';
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('baton_sessions/' || p_user_id, 0));
    -- After the lock: a creation that waited past its deadline behind another gives up too.
    IF clock_timestamp() > p_deadline THEN
        RAISE EXCEPTION 'the creation reached the server after its deadline'
            USING ERRCODE = 'BT001';
    END IF;
    IF EXISTS (SELECT 1 FROM baton_sessions AS t WHERE t.id = p_id) THEN
        RETURN QUERY
        SELECT coalesce(array_agg(t.id ORDER BY t.last_used_at, t.id)
                        FILTER (WHERE t.outcome = 'evicted'), '{}'),
               coalesce(array_agg(t.id ORDER BY t.last_used_at, t.id)
                        FILTER (WHERE t.outcome = 'replaced'), '{}')
        FROM baton_sessions AS t
        WHERE t.user_id = p_user_id AND t.attempt = p_attempt AND t.revoked_until IS NOT NULL;
        RETURN;
    END IF;
    IF p_device_id IS NOT NULL THEN
        WITH r AS (
            UPDATE baton_sessions AS t
            SET revoked_until = least(t.expires_at, p_now + keep), outcome = 'replaced',
                attempt = p_attempt
            WHERE t.user_id = p_user_id AND t.revoked_until IS NULL AND t.expires_at > p_now
              AND t.device_id = p_device_id
            RETURNING t.id, t.last_used_at)
        SELECT coalesce(array_agg(r.id ORDER BY r.last_used_at, r.id), '{}') INTO v_replaced
        FROM r;
    END IF;
    WITH victims AS (
        SELECT t.id FROM baton_sessions AS t
        WHERE t.user_id = p_user_id AND t.revoked_until IS NULL AND t.expires_at > p_now
        ORDER BY t.last_used_at DESC, t.id DESC
        OFFSET greatest(p_max - 1, 0)),
    e AS (
        UPDATE baton_sessions AS t
        SET revoked_until = least(t.expires_at, p_now + keep), outcome = 'evicted',
            attempt = p_attempt
        FROM victims WHERE t.id = victims.id AND t.revoked_until IS NULL
        RETURNING t.id, t.last_used_at)
    SELECT coalesce(array_agg(e.id ORDER BY e.last_used_at, e.id), '{}') INTO v_evicted FROM e;
    INSERT INTO baton_sessions (
        id, user_id, generation, created_at, last_used_at, expires_at, absolute_expires_at,
        ip, user_agent, device_name, device_id, network_v4, network_v6, auth_time, amr, acr,
        dpop_jkt, attempt)
    VALUES (
        p_id, p_user_id, 0, p_now, p_now, p_expires_at, p_absolute_expires_at,
        p_ip, p_user_agent, p_device_name, p_device_id,
        CASE WHEN family(p_network) = 4 THEN p_network END,
        CASE WHEN family(p_network) = 6 THEN p_network END,
        p_now, p_amr, p_acr, p_dpop_jkt, p_attempt);
    RETURN QUERY SELECT v_evicted, v_replaced;
END
$$;
