//! The limit of a rotation on Redis: `redis-benchmark` sending the store's own rotate script
//! (EVALSHA) at a given concurrency, against users created for it. The rotation benches and
//! the load run's refresh mode compare themselves with it, in one run.

use std::time::Duration;

/// The user agent the benchmark's sessions record (a real browser's, 130 bytes).
pub const BENCH_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.112";

/// Users [`populate`] creates and [`redis_benchmark_rotate`] picks from.
pub const USERS: usize = 1_000_000;

/// One measured level: calls a second and latency percentiles.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Calls a second.
    pub per_second: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// Creates [`USERS`] one-session users `bench:{%012d}` at `url`, each record a live session of
/// generation 0 in baton-redis's layout (see its crate docs, "Data layout"), an hour long.
///
/// # Panics
/// When Redis cannot be reached (a benchmark has nothing to measure then).
pub async fn populate(url: &str) {
    let client = redis::Client::open(url).expect("a redis URL");
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("redis for the benchmark's users");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let far = now + 3_600_000;
    let record = format!(
        "m\u{1f}0\u{1f}{now}\u{1f}{now}\u{1f}{far}\u{1f}{far}\u{1f}192.0.2.7\u{1f}\u{1f}{BENCH_UA}\u{1f}bench-user"
    );
    let script = r#"
        for i = tonumber(ARGV[2]), tonumber(ARGV[3]) - 1 do
          redis.call("SET", string.format("bench:{%012d}", i), ARGV[1], "PX", 3600000)
        end
        return 0"#;
    let step = 20_000;
    for start in (0..USERS).step_by(step) {
        let _: i64 = redis::cmd("EVAL")
            .arg(script)
            .arg(0)
            .arg(&record)
            .arg(start)
            .arg(start + step)
            .query_async(&mut conn)
            .await
            .expect("creating the benchmark's users");
    }
}

/// `redis-benchmark -c concurrency -n calls` sending the rotate script (`sha`) against the
/// [`populate`]d users picked at random, each call with generation 0: the first call on a
/// user rotates it, a repeat is graced (no write). With 100,000 calls over a million users
/// about 95% are full rotations, so the limit is, if anything, a little optimistic. `None`
/// without `redis-benchmark`.
pub fn redis_benchmark_rotate(
    port: u16,
    concurrency: usize,
    calls: usize,
    sha: &str,
) -> Option<Run> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let output = std::process::Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", &concurrency.to_string(), "-n", &calls.to_string()])
        .args(["-r", &USERS.to_string(), "--csv"])
        .args([
            "EVALSHA",
            sha,
            "1",
            "bench:{__rand_int__}",
            // The write's deadline (Redis's clock, ms): far away, never late.
            "99999999999999",
            "m",
            "0",
            &now.to_string(),
        ])
        .args([
            "3600000",
            "3600000",
            "record",
            BENCH_UA,
            "192.0.2.7",
            "86400000",
        ])
        // Reuse detection, attempt id, network policy, the address's network class and
        // network, no DPoP key (the script's arguments as `RedisStore::rotate` sends them).
        .args([
            "strict",
            "bench-attempt",
            "record",
            "4/16",
            "192.0.0.0/16",
            "",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let Some(line) = text.lines().find(|l| l.starts_with("\"EVALSHA")) else {
        eprintln!(
            "redis-benchmark gave no EVALSHA line: {} {}",
            text.chars().take(300).collect::<String>(),
            String::from_utf8_lossy(&output.stderr)
                .chars()
                .take(300)
                .collect::<String>()
        );
        return None;
    };
    let cols: Vec<f64> = line
        .split(',')
        .skip(1)
        .filter_map(|c| c.trim_matches('"').parse().ok())
        .collect();
    let ms = |v: f64| Duration::from_secs_f64(v / 1000.0);
    Some(Run {
        per_second: *cols.first()?,
        p50: ms(*cols.get(3)?),
        p99: ms(*cols.get(5)?),
    })
}
