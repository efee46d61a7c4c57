//! A bounded load run against the login app on Redis: 64 concurrent clients, each cycle
//! login -> 20 x (API call, refresh) -> logout, 10,000 cycles in all.
//!
//! ```text
//! cargo build --release -p login-app && cargo run --release -p baton-integration --bin load
//! cargo build --release -p login-app && cargo run --release -p baton-integration --bin load -- --chaos
//! ```
//!
//! It starts its own redis-server and the login app (the release binary) on loopback ports,
//! and prints: 5xx count, sessions lost or forked, p50/p99 per endpoint, and the app's memory
//! (VmRSS) before the load, right after, and once the sessions' access tokens have expired.
//!
//! `--flood` runs a registration flood (300 a second by default, from 127.0.0.2) against the
//! app's default registration limit while the clients (from 127.0.0.1) log in and out, and
//! prints the flood's outcome beside the logins' latency.
//!
//! `--logins N` measures the login path's memory instead: the clients log in (each its own
//! user) until N logins in all, and it prints the app's VmRSS idle, after the registrations,
//! at its peak during the logins (read every 20 ms) and after. `--memory` runs the app in
//! memory instead of on Redis.
//!
//! ```text
//! cargo build --release -p login-app && cargo run --release -p baton-integration --bin load -- --logins 1000
//! cargo build --release -p login-app && cargo run --release -p baton-integration --bin load -- --logins 1000 --memory
//! ```
//!
//! `--refreshes SECS` measures `POST /auth/refresh` end to end (HTTP, the rotation, the
//! cookie, a new access token): at 1, 16 and 64 clients, each rotating its own session's
//! chain for SECS seconds, and, on Redis, `redis-benchmark` sending the same rotate script
//! at the same concurrency to the same server (the limit); it prints rotations a second, p50,
//! p99 and the ratio. With `--memory`, the app's in-memory store (no limit to compare with).
//!
//! ```text
//! cargo build --release -p login-app && cargo run --release -p baton-integration --bin load -- --refreshes 8
//! ```
//!
//! `--chaos` runs two app instances on one Redis (append-only file, fsync always) and breaks
//! things while the clients work: every normal client connection is killed every few seconds
//! (`CLIENT KILL TYPE normal`) and Redis is restarted once halfway. Clients behave as the page
//! does: a 503 or 429 is retried after its `Retry-After` (a 503 that carries a new refresh
//! cookie updates the client's), and their calls alternate between the instances. After each
//! logout the other instance must refuse the access token within a second. It prints, besides
//! the above: sessions lost (a refresh refused, or no login after the retries), revocations
//! lost, false reuse detections, requests retried by the clients, and the instances' own
//! counts of Redis commands sent again after a connection-level error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Two instances, connections killed every few seconds, one Redis restart.
    #[arg(long)]
    chaos: bool,
    /// Seconds between two `CLIENT KILL TYPE normal` in chaos mode.
    #[arg(long, default_value_t = 3)]
    kill_every: u64,
    /// A registration flood from another address while the clients work.
    #[arg(long)]
    flood: bool,
    /// Registrations a second in the flood.
    #[arg(long, default_value_t = 300)]
    flood_rate: u64,
    /// Measure the login path's memory: this many logins in all, then stop.
    #[arg(long)]
    logins: Option<usize>,
    /// Run the app in memory (no Redis).
    #[arg(long)]
    memory: bool,
    /// Measure refresh throughput: this many seconds per concurrency level, then stop.
    #[arg(long)]
    refreshes: Option<u64>,
}

type Http = Client<HttpConnector, Full<Bytes>>;

struct App {
    child: Child,
    log: PathBuf,
}

impl App {
    fn start(
        bin: &PathBuf,
        port: u16,
        redis: Option<&str>,
        key_file: &PathBuf,
        log: PathBuf,
        register_limit: bool,
    ) -> App {
        let stdout = std::fs::File::create(&log).expect("the app's log file");
        let stderr = stdout.try_clone().expect("the app's log file");
        let child = Command::new(bin)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(redis.map(|url| ["--redis-url", url]).iter().flatten())
            .arg("--key-file")
            .arg(key_file)
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
            .args(if register_limit {
                &[][..]
            } else {
                &["--register-rate-per-net", "0"][..]
            })
            .env("RUST_LOG", "warn,login_app=info")
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start the login app (cargo build --release -p login-app)");
        App { child, log }
    }

    /// Stops the app with SIGTERM and returns its shutdown line about the Redis connection.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("redis connection at shutdown"))
            .map(str::to_owned)
            .unwrap_or_default()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    retry_after: Option<u64>,
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
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        cookie,
        retry_after,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

#[derive(Default)]
struct Stats {
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    server_errors: u64,
    unrecovered: u64,
    lost: u64,
    forked: u64,
    revocations_lost: u64,
    false_reuse: u64,
    retried: u64,
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
        self.unrecovered += other.unrecovered;
        self.lost += other.lost;
        self.forked += other.forked;
        self.revocations_lost += other.revocations_lost;
        self.false_reuse += other.false_reuse;
        self.retried += other.retried;
    }
}

/// One request of a cycle.
struct Call<'a> {
    endpoint: &'static str,
    method: Method,
    path: &'a str,
    bearer: Option<&'a str>,
    body: Option<&'a Value>,
}

impl<'a> Call<'a> {
    fn new(endpoint: &'static str, method: Method, path: &'a str) -> Self {
        Call {
            endpoint,
            method,
            path,
            bearer: None,
            body: None,
        }
    }

    fn bearer(mut self, token: &'a str) -> Self {
        self.bearer = Some(token);
        self
    }

    fn body(mut self, body: &'a Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// One client: its instances (one, or two it alternates between) and its counts.
struct Runner {
    http: Http,
    bases: Vec<String>,
    chaos: bool,
    stats: Stats,
}

impl Runner {
    fn base(&self, turn: usize) -> &str {
        &self.bases[turn % self.bases.len()]
    }

    /// One request, retried as the page retries it in chaos mode (a 503 or 429 after its
    /// `Retry-After`, at most 8 tries); `cookie` follows any refresh cookie the answers set.
    async fn send(&mut self, turn: usize, call_: Call<'_>, cookie: Option<&mut String>) -> Reply {
        let Call {
            endpoint,
            method,
            path,
            bearer,
            body,
        } = call_;
        let mut cookie = cookie;
        let mut tries = 0;
        loop {
            tries += 1;
            let mut headers: Vec<(&str, String)> = Vec::new();
            if let Some(token) = bearer {
                headers.push(("authorization", format!("Bearer {token}")));
            }
            if let Some(c) = cookie.as_deref() {
                headers.push(("cookie", c.clone()));
            }
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let base = self.base(turn + tries - 1).to_owned();
            let t = Instant::now();
            let r = call(&self.http, &base, method.clone(), path, &headers, body).await;
            self.stats.record(endpoint, t.elapsed(), r.status);
            if let (Some(c), Some(next)) = (cookie.as_deref_mut(), &r.cookie) {
                c.clone_from(next);
            }
            let transient = r.status == StatusCode::SERVICE_UNAVAILABLE
                || r.status == StatusCode::TOO_MANY_REQUESTS;
            if !self.chaos || !transient || tries == 8 {
                if r.status.is_server_error() {
                    self.stats.unrecovered += 1;
                }
                return r;
            }
            self.stats.retried += 1;
            tokio::time::sleep(Duration::from_secs(r.retry_after.unwrap_or(1).min(5))).await;
        }
    }

    /// `true` once `other` refuses `access`, within a second.
    async fn refused_within_a_second(&mut self, other: &str, access: &str) -> bool {
        let started = Instant::now();
        let bearer = format!("Bearer {access}");
        loop {
            let me = call(
                &self.http,
                other,
                Method::GET,
                "/api/me",
                &[("authorization", &bearer)],
                None,
            )
            .await;
            if me.status == StatusCode::UNAUTHORIZED {
                return true;
            }
            if started.elapsed() > Duration::from_secs(1) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn cycle(&mut self, creds: &Value, per_cycle: usize, turn: usize) {
        let login = self
            .send(
                turn,
                Call::new("login", Method::POST, "/auth/login").body(creds),
                None,
            )
            .await;
        if login.status != StatusCode::OK {
            self.stats.lost += 1;
            return;
        }
        let mut access = login.body["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut cookie = login.cookie.unwrap_or_default();
        for step in 0..per_cycle {
            let t = turn + step + 1;
            let _ = self
                .send(
                    t,
                    Call::new("api", Method::GET, "/api/me").bearer(&access),
                    None,
                )
                .await;
            let r = self
                .send(
                    t + 1,
                    Call::new("refresh", Method::POST, "/auth/refresh"),
                    Some(&mut cookie),
                )
                .await;
            if r.status == StatusCode::OK && r.cookie.is_some() {
                access = r.body["access_token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            } else {
                if r.body["error_description"] == "refresh token reuse detected" {
                    self.stats.false_reuse += 1;
                }
                self.stats.lost += 1;
                return;
            }
        }
        // One session for this login, never two (each client has its own user).
        let sessions = self
            .send(
                turn,
                Call::new("sessions", Method::GET, "/auth/sessions").bearer(&access),
                None,
            )
            .await;
        let count = sessions.body["sessions"].as_array().map_or(0, Vec::len);
        if count != 1 {
            self.stats.forked += 1;
        }
        let out = self
            .send(
                turn,
                Call::new("logout", Method::POST, "/auth/logout"),
                Some(&mut cookie),
            )
            .await;
        if self.chaos && out.status == StatusCode::NO_CONTENT {
            let other = self.base(turn + 1).to_owned();
            if !self.refused_within_a_second(&other, &access).await {
                self.stats.revocations_lost += 1;
            }
        }
    }
}

async fn client(
    mut runner: Runner,
    user: String,
    cycles: Arc<AtomicU64>,
    total: u64,
    per_cycle: usize,
) -> Stats {
    let creds = json!({"username": user, "password": "load-test-password"});
    loop {
        let n = cycles.fetch_add(1, Ordering::SeqCst);
        if n >= total {
            break;
        }
        let turn = usize::try_from(n).unwrap_or(0);
        runner.cycle(&creds, per_cycle, turn).await;
    }
    runner.stats
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Kills every normal client connection every `every`, and restarts Redis once when half the
/// cycles are done.
async fn chaos(
    redis: Arc<Mutex<baton_test::RedisServer>>,
    every: Duration,
    cycles: Arc<AtomicU64>,
    half: u64,
    stop: Arc<AtomicBool>,
) -> (u64, bool) {
    let (mut kills, mut restarted) = (0, false);
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(every).await;
        let redis = redis.clone();
        let restart = !restarted && cycles.load(Ordering::SeqCst) >= half;
        tokio::task::spawn_blocking(move || {
            let mut server = redis
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if restart {
                server.restart();
            } else {
                let _ = server.command(&["CLIENT", "KILL", "TYPE", "normal"]);
            }
        })
        .await
        .expect("chaos step");
        if restart {
            restarted = true;
            println!("chaos: redis restarted");
        } else {
            kills += 1;
        }
    }
    (kills, restarted)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let redis = if args.chaos {
        baton_test::RedisServer::start_with(&[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
    } else {
        baton_test::RedisServer::start()
    }
    .expect("redis-server is needed for the load run");
    let key_file = redis.dir().join("signing.pem");
    let instances = if args.chaos { 2 } else { 1 };
    let mut apps = Vec::new();
    let mut bases = Vec::new();
    for i in 0..instances {
        let port = baton_test::free_port();
        let log = redis.dir().join(format!("app-{i}.log"));
        let url = redis.url();
        apps.push(App::start(
            &args.app_bin,
            port,
            (!args.memory).then_some(url.as_str()),
            &key_file,
            log,
            args.flood,
        ));
        bases.push(format!("http://127.0.0.1:{port}"));
        // The first instance writes the key file; the second reads it.
        let http: Http = Client::builder(TokioExecutor::new()).build_http();
        let deadline = Instant::now() + Duration::from_secs(30);
        while call_ok(&http, &bases[i]).await.is_none() {
            assert!(Instant::now() < deadline, "the app did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let http: Http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.clients)
        .build_http();
    let rss_idle = rss_kib(apps[0].child.id());
    for i in 0..args.clients {
        let creds = json!({"username": format!("load{i}"), "password": "load-test-password"});
        // Each user from an address of its own (127.0.1.x): the registration limit is per
        // address.
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
            127,
            0,
            1,
            u8::try_from(i % 250).unwrap_or(0) + 1,
        ))));
        let registrar: Http = Client::builder(TokioExecutor::new()).build(connector);
        let r = call(
            &registrar,
            &bases[0],
            Method::POST,
            "/auth/register",
            &[],
            Some(&creds),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let pid = apps[0].child.id();
    let rss_before = rss_kib(pid);
    if let Some(seconds) = args.refreshes {
        let port = (!args.memory).then(|| redis.port());
        if port.is_some() {
            baton_test::rotate_limit::populate(&redis.url()).await;
        }
        refresh_throughput(
            &http,
            &bases[0],
            port,
            Duration::from_secs(seconds),
            args.clients,
        )
        .await;
        for app in apps {
            app.stop();
        }
        return;
    }
    if let Some(logins) = args.logins {
        login_memory(
            &http,
            &bases[0],
            pid,
            args.clients,
            logins,
            rss_idle,
            rss_before,
        )
        .await;
        for app in apps {
            app.stop();
        }
        return;
    }
    let cycles = Arc::new(AtomicU64::new(0));
    let redis = Arc::new(Mutex::new(redis));
    let stop = Arc::new(AtomicBool::new(false));
    let chaos_task = args.chaos.then(|| {
        tokio::spawn(chaos(
            redis.clone(),
            Duration::from_secs(args.kill_every),
            cycles.clone(),
            args.cycles as u64 / 2,
            stop.clone(),
        ))
    });
    let flood_task = args
        .flood
        .then(|| tokio::spawn(flood(bases[0].clone(), args.flood_rate, stop.clone())));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.clients {
        let runner = Runner {
            http: http.clone(),
            bases: bases.clone(),
            chaos: args.chaos,
            stats: Stats::default(),
        };
        tasks.spawn(client(
            runner,
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
    stop.store(true, Ordering::SeqCst);
    let flood_done = match flood_task {
        Some(task) => Some(task.await.expect("flood task")),
        None => None,
    };
    let chaos_done = match chaos_task {
        Some(task) => Some(task.await.expect("chaos task")),
        None => None,
    };
    let rss_after = rss_kib(pid);
    // Let every access token (5 s) expire, then one more request prunes the revocation list.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let creds = json!({"username": "load0", "password": "load-test-password"});
    let login = call(
        &http,
        &bases[0],
        Method::POST,
        "/auth/login",
        &[],
        Some(&creds),
    )
    .await;
    let cookie = login.cookie.unwrap_or_default();
    let _ = call(
        &http,
        &bases[0],
        Method::POST,
        "/auth/logout",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    let rss_settled = rss_kib(pid);

    let requests: usize = stats.latencies.values().map(Vec::len).sum();
    println!(
        "load run: {} clients, {} cycles, {} instance(s), {} requests in {:.1} s ({:.0} req/s)",
        args.clients,
        args.cycles,
        instances,
        requests,
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    if let Some((kills, restarted)) = chaos_done {
        println!(
            "chaos: {kills} x CLIENT KILL TYPE normal, redis restarted: {restarted}; requests retried by the clients (503/429): {}",
            stats.retried
        );
        println!(
            "revocations lost: {}; false reuse detections: {}",
            stats.revocations_lost, stats.false_reuse
        );
    }
    if let Some(outcomes) = flood_done {
        let sent: u64 = outcomes.values().sum();
        println!(
            "flood: {sent} registrations from 127.0.0.2 at {}/s; answers: {outcomes:?}",
            args.flood_rate
        );
    }
    println!(
        "5xx answers: {} ({} still 5xx after the retries); sessions lost: {}; sessions forked: {}",
        stats.server_errors, stats.unrecovered, stats.lost, stats.forked
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
    for (i, app) in apps.into_iter().enumerate() {
        let line = app.stop();
        if !line.is_empty() {
            println!("instance {i}: {line}");
        }
    }
    drop(redis);
}

/// At 1, 16 and 64 clients (at most `users`), each logs in once (user `load{i}`) and then
/// rotates its own session's chain for `seconds`; beside it, on Redis (`port`), the limit.
async fn refresh_throughput(
    http: &Http,
    base: &str,
    port: Option<u16>,
    seconds: Duration,
    users: usize,
) {
    let sha = baton_redis::rotate_script_sha();
    println!(
        "| clients | refreshes/s | p50 | p99 | non-200 | redis-benchmark EVALSHA/s | p50 | p99 | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for clients in [1, 16, 64].into_iter().filter(|&c| c <= users) {
        let mut cookies = Vec::new();
        for i in 0..clients {
            let creds = json!({"username": format!("load{i}"), "password": "load-test-password"});
            let login = call(http, base, Method::POST, "/auth/login", &[], Some(&creds)).await;
            assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
            cookies.push(login.cookie.expect("a refresh cookie"));
        }
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for cookie in cookies {
            let (http, base) = (http.clone(), base.to_owned());
            tasks.spawn(async move {
                let mut cookie = cookie;
                let mut latencies = Vec::new();
                let mut refused = 0u64;
                while started.elapsed() < seconds {
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
                    latencies.push(t.elapsed());
                    if r.status == StatusCode::OK {
                        cookie = r.cookie.expect("the successor cookie");
                    } else {
                        refused += 1;
                        if let Some(next) = r.cookie {
                            cookie = next;
                        }
                    }
                }
                (latencies, refused)
            });
        }
        let mut latencies = Vec::new();
        let mut refused = 0;
        while let Some(done) = tasks.join_next().await {
            let (l, r) = done.expect("refresh client");
            latencies.extend(l);
            refused += r;
        }
        let elapsed = started.elapsed();
        latencies.sort();
        let ours = latencies.len() as f64 / elapsed.as_secs_f64();
        let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        match port.and_then(|port| {
            baton_test::rotate_limit::redis_benchmark_rotate(port, clients, 100_000, &sha)
        }) {
            Some(limit) => println!(
                "| {clients} | {ours:.0} | {p50:.2?} | {p99:.2?} | {refused} | {:.0} | {:.2?} | {:.2?} | {:.2}x |",
                limit.per_second,
                limit.p50,
                limit.p99,
                ours / limit.per_second
            ),
            None => {
                println!("| {clients} | {ours:.0} | {p50:.2?} | {p99:.2?} | {refused} | | | | |")
            }
        }
    }
}

/// `clients` clients log in (user `load{i}` each) until `logins` in all, while the app's
/// VmRSS is read every 20 ms; prints it idle, after the registrations, at its peak and after.
async fn login_memory(
    http: &Http,
    base: &str,
    pid: u32,
    clients: usize,
    logins: usize,
    rss_idle: u64,
    rss_registered: u64,
) {
    let done = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(rss_registered));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let (http, base, done) = (http.clone(), base.to_owned(), done.clone());
        tasks.spawn(async move {
            let creds = json!({"username": format!("load{i}"), "password": "load-test-password"});
            let mut statuses = BTreeMap::<u16, u64>::new();
            let mut latencies = Vec::new();
            // Bounded: each client stops once the total is reached (or after 10 minutes).
            while done.fetch_add(1, Ordering::SeqCst) < logins as u64
                && started.elapsed() < Duration::from_secs(600)
            {
                let t = Instant::now();
                let r = call(&http, &base, Method::POST, "/auth/login", &[], Some(&creds)).await;
                latencies.push(t.elapsed());
                *statuses.entry(r.status.as_u16()).or_default() += 1;
                if r.status == StatusCode::SERVICE_UNAVAILABLE {
                    tokio::time::sleep(Duration::from_secs(r.retry_after.unwrap_or(1))).await;
                }
            }
            (statuses, latencies)
        });
    }
    let mut statuses = BTreeMap::<u16, u64>::new();
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (s, l) = joined.expect("login client");
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
        latencies.extend(l);
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kib(pid);
    latencies.sort();
    println!(
        "logins: {} at {clients} clients in {:.1} s ({:.0}/s), answers {statuses:?}, p50 {:.1?}, p99 {:.1?}",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    println!(
        "app VmRSS: idle {} MiB, after {clients} registrations {} MiB, peak during the logins {} MiB, after {} MiB",
        rss_idle / 1024,
        rss_registered / 1024,
        peak.load(Ordering::SeqCst) / 1024,
        rss_after / 1024
    );
}

/// Registrations at `rate` a second from 127.0.0.2 until `stop`; the count of each status.
async fn flood(base: String, rate: u64, stop: Arc<AtomicBool>) -> BTreeMap<u16, u64> {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
        127, 0, 0, 2,
    ))));
    let http: Http = Client::builder(TokioExecutor::new()).build(connector);
    let outcomes = Arc::new(Mutex::new(BTreeMap::new()));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (rate / 100).max(1);
    let mut n = 0u64;
    let mut inflight = tokio::task::JoinSet::new();
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        for _ in 0..per_tick {
            n += 1;
            let (http, base, outcomes) = (http.clone(), base.clone(), outcomes.clone());
            inflight.spawn(async move {
                let creds = json!({"username": format!("flood{n}"), "password": "flood-password"});
                let req = Request::post(format!("{base}/auth/register"))
                    .header("content-type", "application/json")
                    .body(Full::from(creds.to_string()))
                    .expect("request");
                let status =
                    match tokio::time::timeout(Duration::from_secs(15), http.request(req)).await {
                        Ok(Ok(res)) => res.status().as_u16(),
                        _ => 0,
                    };
                *outcomes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(status)
                    .or_insert(0) += 1;
            });
        }
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
    outcomes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

async fn call_ok(http: &Http, base: &str) -> Option<()> {
    let req = Request::get(format!("{base}/healthz"))
        .body(Full::default())
        .ok()?;
    let res = http.request(req).await.ok()?;
    (res.status() == StatusCode::OK).then_some(())
}
