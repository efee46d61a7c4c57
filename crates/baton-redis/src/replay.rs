//! `RedisReplayCache`: the DPoP replay cache shared by every instance.

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use baton_core::{ReplayCache, ReplayCheck, ReplayKey, ReplayUnknown};
use redis::Script;

use crate::{RedisConnection, attempt_id};

/// One `SET NX PX` for a proof; when the key is there already, the proof is new only if the
/// key holds this very call's attempt id (the reply to an earlier try of the same call was
/// lost). `KEYS[1]`: the proof's key; ARGV: attempt id, milliseconds to keep it. 1: first
/// use, 0: replay.
const FIRST_USE: &str = r#"
if redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
  return 1
end
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return 1
end
return 0
"#;

/// The DPoP replay cache on Redis, shared by every instance behind a load balancer: a proof
/// replayed to another instance is refused there too. Give it to
/// `baton_bearer::Dpop::with_replay_cache`.
///
/// One key per proof, `<prefix>dpop:<32 hex digits>`, holding a 16-character attempt id
/// until the proof's window ends (about 120 bytes of Redis memory each with the key's
/// overhead; 2,000 proofs a second over the default 120 s window keep about 30 MB). One
/// round trip per proof: a script whose one `SET NX PX` decides, and that answers a repeat of
/// the same call (a lost reply sent again) as the first time, never as a replay. Works on one
/// Redis and on a Redis Cluster (one key per call).
///
/// When Redis does not answer within the connection's response timeout the request is
/// refused with 503 and `Retry-After` (the proof might have been seen: it is never let
/// through unchecked).
///
/// What it needs of Redis, as the store does: `maxmemory-policy noeviction` (every key here
/// carries a TTL, so a `volatile-*` policy evicts these first, and an evicted proof can be
/// replayed), and a primary that keeps what it answered (a failover that loses unreplicated
/// writes forgets the last proofs seen, which could then be replayed within their window).
///
/// ```no_run
/// use baton_redis::{RedisConnection, RedisOptions, RedisReplayCache};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisConnection::connect("redis://127.0.0.1:6379/", &RedisOptions::new()).await?;
/// let replay = RedisReplayCache::new(redis, "baton:");
/// // baton_bearer::Dpop::new("https://api.example.com")?.with_replay_cache(replay)
/// # let _ = replay;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisReplayCache {
    conn: RedisConnection,
    prefix: Arc<str>,
    script: Arc<Script>,
}

impl fmt::Debug for RedisReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReplayCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisReplayCache {
    /// The cache on `conn` (shared with the store, the feed and the limiter); keys are
    /// `<prefix>dpop:<hex>`.
    pub fn new(conn: impl Into<RedisConnection>, prefix: &str) -> Self {
        RedisReplayCache {
            conn: conn.into(),
            prefix: Arc::from(prefix),
            script: Arc::new(Script::new(FIRST_USE)),
        }
    }

    /// The Redis key of `key`.
    fn key_of(&self, key: &ReplayKey) -> String {
        let mut out = String::with_capacity(self.prefix.len() + 5 + 32);
        out.push_str(&self.prefix);
        out.push_str("dpop:");
        for b in key {
            let _ = write!(out, "{b:02x}");
        }
        out
    }
}

impl ReplayCache for RedisReplayCache {
    fn first_use(&self, key: ReplayKey, until_ms: u64, now_ms: u64) -> ReplayCheck {
        let ttl_ms = until_ms.saturating_sub(now_ms).max(1);
        let key = self.key_of(&key);
        let attempt = attempt_id();
        let conn = self.conn.clone();
        let script = self.script.clone();
        ReplayCheck::Pending(Box::pin(async move {
            let mut invocation = script.prepare_invoke();
            invocation.key(key).arg(attempt).arg(ttl_ms);
            let invocation = &invocation;
            let answer = conn
                .read("DPoP replay check", move |mut conn| async move {
                    invocation.invoke_async::<u8>(&mut conn).await
                })
                .await;
            match answer {
                Ok(first) => Ok(first == 1),
                Err(_) => Err(ReplayUnknown("Redis did not answer")),
            }
        }))
    }
}
