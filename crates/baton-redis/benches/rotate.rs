//! Rotation throughput and latency of `RedisStore` against a local, test-started
//! `redis-server`, at concurrency 1, 16 and 64; beside it, `redis-benchmark` running the same
//! rotate script (EVALSHA) on the same server: the limit.
//!
//! ```text
//! cargo bench -p baton-redis --bench rotate
//! ```
//!
//! Ours: `c` tasks share one `RedisStore` (one multiplexed connection); each owns a session
//! and rotates its own token chain, so every call is a full rotation. The limit:
//! `redis-benchmark -c <c>` sends the script's EVALSHA over `c` connections against one
//! million pre-created one-session users picked at random (`__rand_int__`), each call with
//! generation 0: the first call on a user rotates it, a repeat is graced (no write). With
//! 100,000 calls over a million users about 95% are full rotations, so the limit is, if
//! anything, a little optimistic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_redis::{RedisOptions, RedisStore};
use baton_store::{Device, Policy, RefreshKeys, RefreshStore, RotateContext, RotationKind};
use baton_test::RedisServer;

use baton_test::rotate_limit::{BENCH_UA as UA, Run};
const ROTATIONS: usize = 60_000;
const LIMIT_CALLS: usize = 100_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn ours(store: &RedisStore, concurrency: usize) -> Run {
    let per_task = ROTATIONS / concurrency;
    let mut tokens = Vec::new();
    for i in 0..concurrency {
        let created = store
            .create(
                &format!("bench-{concurrency}-{i}"),
                Device::new(Some(UA), None),
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

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let policy = Policy::builder().grace_window(Duration::from_secs(10)).build().unwrap();
        let store = RedisStore::connect(&server.url(), RefreshKeys::generate().unwrap(), policy, RedisOptions::new())
            .await
            .unwrap()
            .with_clock(Arc::new(baton_core::SystemClock));
        // Load the rotate script (the first rotation does) and find its SHA.
        let warm = store.create("warm-up", Device::default()).await.unwrap();
        store.rotate(warm.token.expose(), RotateContext::default()).await.unwrap();
        let sha = baton_redis::rotate_script_sha();
        baton_test::rotate_limit::populate(&server.url()).await;

        println!("rotations against redis-server on 127.0.0.1:{} ({ROTATIONS} per level)", server.port());
        println!("| concurrency | RedisStore rot/s | p50 | p99 | redis-benchmark EVALSHA rot/s | p50 | p99 | ratio |");
        println!("|---|---|---|---|---|---|---|---|");
        for concurrency in [1, 16, 64] {
            let ours = ours(&store, concurrency).await;
            let limit = baton_test::rotate_limit::redis_benchmark_rotate(server.port(), concurrency, LIMIT_CALLS, &sha);
            match limit {
                Some(l) => println!(
                    "| {concurrency} | {:.0} | {:.0?} | {:.0?} | {:.0} | {:.0?} | {:.0?} | {:.2}x |",
                    ours.per_second, ours.p50, ours.p99, l.per_second, l.p50, l.p99, ours.per_second / l.per_second
                ),
                None => println!(
                    "| {concurrency} | {:.0} | {:.0?} | {:.0?} | (redis-benchmark not found) | | | |",
                    ours.per_second, ours.p50, ours.p99
                ),
            }
        }
    });
}
