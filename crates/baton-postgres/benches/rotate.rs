//! Rotation throughput and latency of `PostgresStore` against a local, test-started
//! PostgreSQL, at concurrency 1, 16 and 64; beside it, `pgbench` running the same rotation
//! statement (`baton_rotate(...)`) on the same server at the same concurrency: the limit. Then
//! the bytes one session takes (table and indexes) over 10,000 sessions with a 130-byte user
//! agent.
//!
//! ```text
//! cargo bench -p baton-postgres --bench rotate
//! ```
//!
//! Ours: `c` tasks share one `PostgresStore` (a pool of `c` connections); each owns a session
//! and rotates its own token chain, so every call is a full rotation. The limit: `pgbench -c
//! <c> -M prepared` calls the function over `c` connections on sessions picked at random among
//! 1,000,000 pre-created ones, each call with generation 0: the first call on a session rotates
//! it, a repeat within the grace window is graced (no write). With 40,000 calls over a million
//! sessions about 98% are full rotations, so the limit is, if anything, a little optimistic.

use std::time::{Duration, Instant};

use baton_postgres::{PostgresOptions, PostgresStore};
use baton_store::{Device, Policy, RefreshKeys, RefreshStore, RotateContext, RotationKind};
use baton_test::PgServer;

/// 130 bytes.
const UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.112";
const ROTATIONS: usize = 40_000;
const LIMIT_SESSIONS: usize = 1_000_000;

struct Run {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn ours(url: &str, concurrency: usize) -> Run {
    let policy = Policy::builder()
        .grace_window(Duration::from_secs(10))
        .build()
        .unwrap();
    let store = PostgresStore::connect(
        url,
        RefreshKeys::generate().unwrap(),
        policy,
        PostgresOptions::new().with_max_connections(concurrency as u32),
    )
    .await
    .unwrap();
    let per_task = ROTATIONS / concurrency;
    let mut tokens = Vec::new();
    for i in 0..concurrency {
        let created = store
            .create(
                &format!("bench-{concurrency}-{i}"),
                Device::new(Some(UA), Some("192.0.2.7".parse().unwrap())),
            )
            .await
            .unwrap();
        tokens.push(created.token);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for token in tokens {
        let store = store.clone();
        tasks.spawn(async move {
            let mut token = token;
            let mut latencies = Vec::with_capacity(per_task);
            let context = RotateContext::new(Some(UA), Some("192.0.2.7".parse().unwrap()));
            for _ in 0..per_task {
                let t = Instant::now();
                let r = store.rotate(token.expose(), context.clone()).await.unwrap();
                latencies.push(t.elapsed());
                assert_eq!(r.kind, RotationKind::Rotated);
                token = r.token;
            }
            latencies
        });
    }
    let mut latencies = Vec::with_capacity(ROTATIONS);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Run {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    }
}

/// Pre-creates the limit's sessions: ids 1 to 1,000,000 (as 24 bytes), one user each.
fn populate(server: &PgServer, db: &str) {
    server.psql(
        db,
        &format!(
            "INSERT INTO baton_sessions (id, user_id, generation, created_at, last_used_at, \
             expires_at, absolute_expires_at, ip, user_agent, auth_time, network_v4) \
             SELECT decode(lpad(to_hex(n), 48, '0'), 'hex'), 'bench-' || n, 0, now(), now(), \
             now() + interval '1 hour', now() + interval '1 hour', '192.0.2.7', '{UA}', now(), \
             '192.0.0.0/16' FROM generate_series(1, {LIMIT_SESSIONS}) AS n"
        ),
    );
    server.psql(db, "VACUUM ANALYZE baton_sessions");
}

/// `pgbench` calling the rotation function at `concurrency`; latencies from its
/// per-transaction log.
fn limit(server: &PgServer, db: &str, concurrency: usize, dir: &std::path::Path) -> Option<Run> {
    let script = dir.join("rotate.sql");
    std::fs::write(
        &script,
        format!(
            "\\set n random(1, {LIMIT_SESSIONS})\n\
             SELECT outcome FROM baton_rotate(decode(lpad(to_hex(:n::bigint), 48, '0'), 'hex'), 0, \
             now(), 10000, 1209600000, false, '{UA}', '192.0.2.7', 86400000, false, \
             :client_id, 'record', '192.0.0.0/16', NULL, now() + interval '1 hour');\n"
        ),
    )
    .ok()?;
    let prefix = dir.join(format!("log-{concurrency}"));
    let output = std::process::Command::new("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port().to_string(),
            "-U",
            "postgres",
        ])
        .args(["-n", "-M", "prepared", "-c", &concurrency.to_string()])
        .args(["-j", &concurrency.min(2).to_string()])
        .args(["-t", &(ROTATIONS / concurrency).to_string()])
        .arg("-f")
        .arg(&script)
        .arg("-l")
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg(db)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        eprintln!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    let tps: f64 = text
        .lines()
        .find(|l| l.starts_with("tps = "))?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()?;
    // Each log line: client_id transaction_no time_us script_no time_epoch time_us.
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&format!("log-{concurrency}.")) {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).ok()?.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|t| t.parse::<u64>().ok())
            {
                latencies.push(Duration::from_micros(us));
            }
        }
    }
    latencies.sort();
    if latencies.is_empty() {
        return None;
    }
    Some(Run {
        per_second: tps,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    })
}

/// Bytes per session: 10,000 sessions with a 130-byte user agent, table and indexes.
async fn bytes_per_session(server: &PgServer) -> (i64, i64) {
    let url = server.create_database();
    let store = PostgresStore::connect(
        &url,
        RefreshKeys::generate().unwrap(),
        Policy::new(),
        PostgresOptions::new(),
    )
    .await
    .unwrap();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let size = || -> i64 {
        server
            .psql(&db, "SELECT pg_total_relation_size('baton_sessions')")
            .trim()
            .parse()
            .unwrap()
    };
    let empty = size();
    for i in 0..10_000 {
        store
            .create(
                &format!("user-{i:05}"),
                Device::new(Some(UA), Some("192.0.2.7".parse().unwrap())),
            )
            .await
            .unwrap();
    }
    server.psql(&db, "VACUUM ANALYZE baton_sessions");
    let full = size();
    ((full - empty) / 10_000, full)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(server) = PgServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ours_url = server.create_database();
        let limit_url = server.create_database();
        let limit_db = limit_url.rsplit('/').next().unwrap().to_owned();
        // The limit's database gets the schema from the store, then its million sessions.
        let _ = PostgresStore::connect(
            &limit_url,
            RefreshKeys::generate().unwrap(),
            Policy::new(),
            PostgresOptions::new(),
        )
        .await
        .unwrap();
        populate(&server, &limit_db);
        let dir = std::env::temp_dir().join(format!("baton-pgbench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        println!(
            "rotations against PostgreSQL on 127.0.0.1:{} ({ROTATIONS} per level)",
            server.port()
        );
        println!("| concurrency | PostgresStore rot/s | p50 | p99 | pgbench rot/s | p50 | p99 | ratio |");
        println!("|---|---|---|---|---|---|---|---|");
        for concurrency in [1, 16, 64] {
            let ours = ours(&ours_url, concurrency).await;
            match limit(&server, &limit_db, concurrency, &dir) {
                Some(l) => println!(
                    "| {concurrency} | {:.0} | {:.2?} | {:.2?} | {:.0} | {:.2?} | {:.2?} | {:.2}x |",
                    ours.per_second,
                    ours.p50,
                    ours.p99,
                    l.per_second,
                    l.p50,
                    l.p99,
                    ours.per_second / l.per_second
                ),
                None => println!(
                    "| {concurrency} | {:.0} | {:.2?} | {:.2?} | (pgbench not found or failed) | | | |",
                    ours.per_second, ours.p50, ours.p99
                ),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        let (per_session, total) = bytes_per_session(&server).await;
        println!(
            "bytes per session (10,000 sessions, 130-byte user agent, table + indexes): \
             {per_session} ({total} in all)"
        );
    });
}
