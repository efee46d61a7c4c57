//! A bounded load run against the login app on Redis: 64 concurrent clients, each cycle
//! login -> 20 x (API call, refresh) -> logout, 10,000 cycles in all.
//!
//! ```text
//! cargo build --release -p login-app && cargo run --release -p baton-integration --bin load
//! ```
//!
//! It starts its own redis-server and the login app (the release binary) on loopback ports,
//! and prints: 5xx count, sessions lost or forked, p50/p99 per endpoint, and the app's memory
//! (VmRSS) before the load, right after, and once the sessions' access tokens have expired.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// The login-app binary.
    #[arg(long, default_value = "target/release/login-app")]
    app_bin: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Cycles in all.
    #[arg(long, default_value_t = 10_000)]
    cycles: usize,
    /// API calls and refreshes per cycle.
    #[arg(long, default_value_t = 20)]
    per_cycle: usize,
}

type Http = Client<HttpConnector, Full<Bytes>>;

struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

struct Reply {
    status: StatusCode,
    cookie: Option<String>,
    body: Value,
}

async fn call(
    http: &Http,
    base: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map_or(Full::default(), |b| Full::from(b.to_string()));
    let res = http
        .request(req.body(body).expect("request"))
        .await
        .expect("transport");
    let status = res.status();
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Secure-refresh=v1."))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned());
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        cookie,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

#[derive(Default)]
struct Stats {
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    server_errors: u64,
    lost: u64,
    forked: u64,
}

impl Stats {
    fn record(&mut self, endpoint: &'static str, took: Duration, status: StatusCode) {
        self.latencies.entry(endpoint).or_default().push(took);
        if status.is_server_error() {
            self.server_errors += 1;
        }
    }

    fn merge(&mut self, other: Stats) {
        for (k, mut v) in other.latencies {
            self.latencies.entry(k).or_default().append(&mut v);
        }
        self.server_errors += other.server_errors;
        self.lost += other.lost;
        self.forked += other.forked;
    }
}

async fn client(
    http: Http,
    base: String,
    user: String,
    cycles: Arc<AtomicU64>,
    total: u64,
    per_cycle: usize,
) -> Stats {
    let mut stats = Stats::default();
    let creds = json!({"username": user, "password": "load-test-password"});
    while cycles.fetch_add(1, Ordering::SeqCst) < total {
        let t = Instant::now();
        let login = call(&http, &base, Method::POST, "/auth/login", &[], Some(&creds)).await;
        stats.record("login", t.elapsed(), login.status);
        if login.status != StatusCode::OK {
            stats.lost += 1;
            continue;
        }
        let mut access = login.body["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut cookie = login.cookie.unwrap_or_default();
        let mut alive = true;
        for _ in 0..per_cycle {
            let bearer = format!("Bearer {access}");
            let t = Instant::now();
            let me = call(
                &http,
                &base,
                Method::GET,
                "/api/me",
                &[("authorization", &bearer)],
                None,
            )
            .await;
            stats.record("api", t.elapsed(), me.status);
            let t = Instant::now();
            let r = call(
                &http,
                &base,
                Method::POST,
                "/auth/refresh",
                &[("cookie", &cookie)],
                None,
            )
            .await;
            stats.record("refresh", t.elapsed(), r.status);
            match (r.status, r.cookie) {
                (StatusCode::OK, Some(next)) => {
                    cookie = next;
                    access = r.body["access_token"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                }
                _ => {
                    alive = false;
                    break;
                }
            }
        }
        if !alive {
            stats.lost += 1;
            continue;
        }
        // One session for this login, never two (each client has its own user).
        let bearer = format!("Bearer {access}");
        let sessions = call(
            &http,
            &base,
            Method::GET,
            "/auth/sessions",
            &[("authorization", &bearer)],
            None,
        )
        .await;
        let count = sessions.body["sessions"].as_array().map_or(0, Vec::len);
        if count != 1 {
            stats.forked += 1;
        }
        let t = Instant::now();
        let out = call(
            &http,
            &base,
            Method::POST,
            "/auth/logout",
            &[("cookie", &cookie)],
            None,
        )
        .await;
        stats.record("logout", t.elapsed(), out.status);
    }
    stats
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let redis = baton_test::RedisServer::start().expect("redis-server is needed for the load run");
    let port = baton_test::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let app = App(Command::new(&args.app_bin)
        .args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--redis-url",
            &redis.url(),
        ])
        .args([
            "--access-ttl",
            "5",
            "--login-rate-per-ip",
            "0",
            "--login-rate-per-user",
            "0",
            "--refresh-rate-per-ip",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the login app (cargo build --release -p login-app)"));
    let http: Http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.clients)
        .build_http();
    let deadline = Instant::now() + Duration::from_secs(30);
    while call_ok(&http, &base).await.is_none() {
        assert!(Instant::now() < deadline, "the app did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..args.clients {
        let creds = json!({"username": format!("load{i}"), "password": "load-test-password"});
        let r = call(
            &http,
            &base,
            Method::POST,
            "/auth/register",
            &[],
            Some(&creds),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let pid = app.0.id();
    let rss_before = rss_kib(pid);
    let cycles = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.clients {
        tasks.spawn(client(
            http.clone(),
            base.clone(),
            format!("load{i}"),
            cycles.clone(),
            args.cycles as u64,
            args.per_cycle,
        ));
    }
    let mut stats = Stats::default();
    while let Some(done) = tasks.join_next().await {
        stats.merge(done.expect("client task"));
    }
    let elapsed = started.elapsed();
    let rss_after = rss_kib(pid);
    // Let every access token (5 s) expire, then one more request prunes the revocation list.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let creds = json!({"username": "load0", "password": "load-test-password"});
    let login = call(&http, &base, Method::POST, "/auth/login", &[], Some(&creds)).await;
    let cookie = login.cookie.unwrap_or_default();
    let _ = call(
        &http,
        &base,
        Method::POST,
        "/auth/logout",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    let rss_settled = rss_kib(pid);

    let requests: usize = stats.latencies.values().map(Vec::len).sum();
    println!(
        "load run: {} clients, {} cycles, {} requests in {:.1} s ({:.0} req/s)",
        args.clients,
        args.cycles,
        requests,
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    println!(
        "5xx: {}; sessions lost: {}; sessions forked: {}",
        stats.server_errors, stats.lost, stats.forked
    );
    println!("| endpoint | requests | p50 | p99 |");
    println!("|---|---|---|---|");
    for (endpoint, mut latencies) in stats.latencies {
        latencies.sort();
        println!(
            "| {endpoint} | {} | {:.2?} | {:.2?} |",
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
    }
    println!(
        "app VmRSS: before {rss_before} KiB, right after {rss_after} KiB, after expiry {rss_settled} KiB"
    );
    drop(app);
    drop(redis);
}

async fn call_ok(http: &Http, base: &str) -> Option<()> {
    let req = Request::get(format!("{base}/healthz"))
        .body(Full::default())
        .ok()?;
    let res = http.request(req).await.ok()?;
    (res.status() == StatusCode::OK).then_some(())
}
