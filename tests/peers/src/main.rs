//! The load benchmark: one small route through axum, bare and behind each authentication
//! layer a Rust team would pick, driven by `wrk` over loopback.
//!
//! ```text
//! cargo run --release --manifest-path tests/peers/Cargo.toml -- run
//! ```
//!
//! `run` starts each variant's server in its own process pinned to CPU 0 (a one-thread tokio
//! runtime: axum on one core), checks it (the credential gives 200 with the user's id, no
//! credential gives 401), drives it with `wrk` pinned to CPU 1, and stops it; variants run
//! interleaved (A B C ... A B C ...) for several rounds, and the report gives each variant's
//! median requests per second, its ratio to bare axum, and median p50/p99 latency. It also
//! gives the server's CPU time per request (its threads' user and system time over the wrk
//! run, from `/proc/<pid>/stat`, divided by the requests served) and the ratios by
//! that: on a shared host, requests per second move with whatever else takes the server's
//! core, while the CPU a request costs moves much less.
//! `tower-sessions` gets a `redis-server` of its own on a free loopback port.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod serve;

#[derive(Parser)]
#[command(about = "Load benchmark of baton's bearer layer against bare axum and its peers")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs every variant, interleaved, and prints the report.
    Run {
        /// Rounds: every variant runs once per round.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds of load per variant and round.
        #[arg(long, default_value_t = 8)]
        seconds: u64,
        /// Connections wrk keeps open.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Only these variants (default: all).
        #[arg(long, value_delimiter = ',')]
        variants: Vec<String>,
        /// Also write the report (Markdown) here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Serves one variant on 127.0.0.1 (used by `run`); prints `ready <port> <header>`.
    Serve {
        variant: String,
        #[arg(long)]
        redis_url: Option<String>,
    },
}

/// Every variant, in run order.
const VARIANTS: &[&str] = &[
    "bare",
    "baton-hs256",
    "baton-es256",
    "baton-eddsa",
    "baton-hs256-cache",
    "baton-es256-cache",
    "baton-eddsa-cache",
    "axum07-bare",
    "jwt-authorizer-hs256",
    "jwt-authorizer-es256",
    "jwt-authorizer-eddsa",
    "tower-sessions-redis",
];

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve { variant, redis_url } => serve::serve(&variant, redis_url.as_deref()),
        Cmd::Run {
            rounds,
            seconds,
            connections,
            variants,
            out,
        } => {
            let variants: Vec<String> = if variants.is_empty() {
                VARIANTS.iter().map(|v| (*v).to_owned()).collect()
            } else {
                variants
            };
            for v in &variants {
                assert!(VARIANTS.contains(&v.as_str()), "unknown variant {v}");
            }
            let report = run(
                &variants,
                rounds.clamp(1, 50),
                seconds.clamp(1, 120),
                connections,
            );
            println!("{report}");
            if let Some(out) = out {
                std::fs::write(&out, &report).expect("write the report");
            }
        }
    }
}

/// One wrk run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    /// Requests wrk completed.
    requests: u64,
    /// The server's CPU time (user and system, all its threads) per request served, in
    /// microseconds: steadier than requests per second on a shared host, whose other work
    /// takes the server's core away for a while without changing what a request costs.
    cpu_us: Option<f64>,
}

fn run(variants: &[String], rounds: usize, seconds: u64, connections: usize) -> String {
    require("wrk", "apt-get install wrk");
    require("taskset", "apt-get install util-linux");
    let redis = variants
        .iter()
        .any(|v| v.starts_with("tower-sessions"))
        .then(|| baton_test::RedisServer::start().expect("start redis-server for tower-sessions"));
    if let Some(redis) = &redis {
        // Redis shares CPU 1 with the load generator, as a remote store would not.
        pin(redis.pid().expect("redis-server pid"), 1);
    }
    let mut samples: Vec<(String, Vec<Sample>)> =
        variants.iter().map(|v| (v.clone(), Vec::new())).collect();
    for round in 1..=rounds {
        for (variant, runs) in &mut samples {
            let sample = run_one(
                variant,
                redis.as_ref().map(|r| r.url()),
                seconds,
                connections,
            );
            eprintln!(
                "round {round}/{rounds} {variant:<22} {:>9.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  server CPU {} us/req  non-2xx {}",
                sample.rps,
                sample.p50_us,
                sample.p99_us,
                sample.cpu_us.map_or("-".to_owned(), |c| format!("{c:.2}")),
                sample.errors
            );
            runs.push(sample);
        }
    }
    report(&samples, rounds, seconds, connections)
}

fn require(tool: &str, install: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "{tool} not found: {install}");
}

fn pin(pid: u32, cpu: usize) {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("taskset");
    assert!(status.success(), "taskset -p {pid}");
}

/// Starts the variant's server on CPU 0, checks it, loads it with wrk on CPU 1, stops it.
fn run_one(variant: &str, redis_url: Option<String>, seconds: u64, connections: usize) -> Sample {
    let exe = std::env::current_exe().expect("own path");
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"])
        .arg(exe)
        .args(["serve", variant])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(url) = redis_url {
        cmd.args(["--redis-url", &url]);
    }
    let mut server = Server(cmd.spawn().expect("start the server"));
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the ready line");
    let mut parts = line.trim_end().splitn(3, ' ');
    let (Some("ready"), Some(port), Some(header)) = (parts.next(), parts.next(), parts.next())
    else {
        panic!("{variant}: unexpected first line {line:?}");
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("port");

    // The variant really authenticates: 200 with the user's id, 401 without a credential.
    let (status, body) = get(addr, Some(header));
    assert_eq!(status, 200, "{variant}: {body}");
    assert!(body.contains("bench-user"), "{variant}: {body}");
    if variant.contains("bare") {
        assert_eq!(get(addr, None).0, 200, "{variant}");
    } else {
        assert_eq!(get(addr, None).0, 401, "{variant}");
    }

    let pid = server.0.id();
    let cpu_before = cpu_ns(pid);
    let output = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1", "--latency"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .args(["-H", header])
        .arg(format!("http://{addr}/api/me"))
        .output()
        .expect("run wrk");
    assert!(output.status.success(), "wrk failed: {output:?}");
    let cpu_after = cpu_ns(pid);
    let text = String::from_utf8_lossy(&output.stdout);
    drop(server);
    let mut sample =
        parse_wrk(&text).unwrap_or_else(|| panic!("{variant}: cannot read wrk's output:\n{text}"));
    if let (Some(before), Some(after)) = (cpu_before, cpu_after)
        && sample.requests > 0
    {
        sample.cpu_us =
            Some(after.saturating_sub(before) as f64 / 1_000.0 / sample.requests as f64);
    }
    sample
}

/// The CPU time a process has run, user and system, in nanoseconds: `utime` + `stime` of
/// `/proc/<pid>/stat` (every thread's, those that ended included), in clock ticks of
/// `getconf CLK_TCK` (10 ms at 100 Hz: 0.2 % of a 5 s run on one core). `None` where the
/// kernel does not give it.
fn cpu_ns(pid: u32) -> Option<u64> {
    static TICK_NS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let tick_ns = (*TICK_NS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().ok()?;
        let hz: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        (hz > 0).then(|| 1_000_000_000 / hz)
    }))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, and free to hold spaces): field 3, the state,
    // first; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * tick_ns)
}

/// Kills the server process when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 GET of `/api/me` with an optional `Name: value` header.
fn get(addr: SocketAddr, header: Option<&str>) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let extra = header.map(|h| format!("{h}\r\n")).unwrap_or_default();
    write!(
        stream,
        "GET /api/me HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// Requests per second, p50, p99, non-2xx count and requests completed from `wrk --latency`.
fn parse_wrk(text: &str) -> Option<Sample> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut errors = 0;
    let mut requests = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some((n, _)) = line.split_once(" requests in ") {
            requests = n.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = micros(v.trim());
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = micros(v.trim());
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().ok()?;
        } else if line.starts_with("Socket errors:") {
            errors += line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Some(Sample {
        rps: rps?,
        p50_us: p50?,
        p99_us: p99?,
        errors,
        requests: requests?,
        cpu_us: None,
    })
}

/// `512.00us`, `1.20ms`, `2.00s` in microseconds.
fn micros(v: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `a / b` as `1.23x`, or `-` when either is missing.
fn times(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}x", a / b),
        _ => "-".to_owned(),
    }
}

/// The median of a variant's runs.
struct Medians<'a> {
    name: &'a str,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    /// `None` when a run has no CPU time (no `/proc`).
    cpu_us: Option<f64>,
}

fn report(
    samples: &[(String, Vec<Sample>)],
    rounds: usize,
    seconds: u64,
    connections: usize,
) -> String {
    let medians: Vec<Medians<'_>> = samples
        .iter()
        .map(|(v, runs)| Medians {
            name: v.as_str(),
            rps: median(runs.iter().map(|s| s.rps).collect()),
            p50_us: median(runs.iter().map(|s| s.p50_us).collect()),
            p99_us: median(runs.iter().map(|s| s.p99_us).collect()),
            errors: runs.iter().map(|s| s.errors).sum(),
            cpu_us: runs
                .iter()
                .map(|s| s.cpu_us)
                .collect::<Option<Vec<f64>>>()
                .map(median),
        })
        .collect();
    let find = |name: &str| medians.iter().find(|m| m.name == name);
    let rps_of = |name: &str| find(name).map(|m| m.rps);
    let cpu_of = |name: &str| find(name).and_then(|m| m.cpu_us);
    let bare = find("bare");
    let bare07 = find("axum07-bare");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{rounds} rounds x {seconds} s per variant, interleaved; wrk -t1 -c{connections} on CPU 1, server on CPU 0 (one-thread runtime)\n"
    );
    let _ = writeln!(
        out,
        "Ratios \"by CPU\" divide the bare server's CPU time per request by the variant's (user and system \
         time of the server's threads over the run, from /proc): 0.90x is a tenth more CPU per request.\n"
    );
    let _ = writeln!(
        out,
        "| variant | req/s (median) | vs bare axum 0.8 | vs bare axum 0.7 | server CPU per request | vs bare axum 0.8 by CPU | p50 | p99 | non-2xx |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in &medians {
        let ratio = |base: Option<&Medians<'_>>| times(Some(m.rps), base.map(|b| b.rps));
        let cpu = m.cpu_us.map_or("-".to_owned(), |c| format!("{c:.2} us"));
        // Less CPU per request is better: the bare server's over the variant's.
        let by_cpu = times(bare.and_then(|b| b.cpu_us), m.cpu_us);
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {cpu} | {by_cpu} | {:.0} us | {:.0} us | {} |",
            m.name,
            m.rps,
            ratio(bare),
            ratio(bare07),
            m.p50_us,
            m.p99_us,
            m.errors
        );
    }
    let pairs = [
        ("baton-hs256", "jwt-authorizer-hs256"),
        ("baton-es256", "jwt-authorizer-es256"),
        ("baton-eddsa", "jwt-authorizer-eddsa"),
        ("baton-hs256", "tower-sessions-redis"),
        ("baton-hs256-cache", "jwt-authorizer-hs256"),
        ("baton-hs256-cache", "tower-sessions-redis"),
        ("baton-es256-cache", "jwt-authorizer-es256"),
    ];
    let _ = writeln!(
        out,
        "\n| ours | theirs | ours / theirs | by CPU |\n|---|---|---:|---:|"
    );
    for (ours, theirs) in pairs {
        if let (Some(a), Some(b)) = (rps_of(ours), rps_of(theirs)) {
            // tower-sessions' Redis works outside the server's process: its CPU is not counted.
            let by_cpu = if theirs.starts_with("tower-sessions") {
                "-".to_owned()
            } else {
                times(cpu_of(theirs), cpu_of(ours))
            };
            let _ = writeln!(
                out,
                "| {ours} | {theirs} | {} | {by_cpu} |",
                times(Some(a), Some(b))
            );
        }
    }
    let _ = writeln!(
        out,
        "\nEvery run, in order (requests per second, server CPU per request):\n"
    );
    for (name, runs) in samples {
        let list: Vec<String> = runs
            .iter()
            .map(|s| match s.cpu_us {
                Some(c) => format!("{:.0} ({c:.2} us)", s.rps),
                None => format!("{:.0}", s.rps),
            })
            .collect();
        let _ = writeln!(out, "- {name}: {}", list.join(", "));
    }
    out
}

pub(crate) fn announce(port: u16, header: &str) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready {port} {header}").expect("stdout");
    stdout.flush().expect("stdout");
}
