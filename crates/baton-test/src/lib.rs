//! Test support for baton (not published): real `redis-server` processes on free loopback
//! ports, started and stopped by pid, so tests can kill, pause and restart them.
//!
//! When no `redis-server` binary exists, [`RedisServer::start`] prints a loud message and
//! returns `None` (the test then skips), unless `BATON_REQUIRE_REDIS=1`, when it panics.
//! `BATON_REDIS_SERVER` names another binary.
//!
//! [`OidcServer`]: a real OpenID provider (`oidc-provider` on node) over HTTPS, for the
//! sign-in tests (`BATON_REQUIRE_OIDC=1` makes a missing node fail them).
//!
//! [`PgServer`]: a real PostgreSQL server (`initdb`, `pg_ctl`) on a loopback port
//! (`BATON_REQUIRE_POSTGRES=1` makes missing binaries fail the tests).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod oidc;
mod postgres;
pub mod rotate_limit;

pub use oidc::{OidcClient, OidcServer, ProviderBrowser};
pub use postgres::PgServer;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn binary() -> String {
    std::env::var("BATON_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

fn required() -> bool {
    std::env::var("BATON_REQUIRE_REDIS").is_ok_and(|v| v == "1")
}

/// `true` when a `redis-server` binary runs here.
pub fn redis_available() -> bool {
    Command::new(binary())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A `redis-server` of the test's own, on 127.0.0.1. Killed and reaped on drop; its log is
/// printed when the test panics.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a server with `--save "" --appendonly no`, or skips (see the crate docs).
    ///
    /// # Panics
    /// When the server does not start, or `redis-server` is missing under
    /// `BATON_REQUIRE_REDIS=1`.
    pub fn start() -> Option<Self> {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// Starts a server with extra arguments (`--appendonly yes`, ...).
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub fn start_with(args: &[&str]) -> Option<Self> {
        if !redis_available() {
            assert!(
                !required(),
                "redis-server not found and BATON_REQUIRE_REDIS=1"
            );
            eprintln!(
                "\n********************************************************************\n\
                 SKIPPED: no redis-server binary here; install redis-server (or set\n\
                 BATON_REDIS_SERVER) to run this test. BATON_REQUIRE_REDIS=1 makes it fail.\n\
                 ********************************************************************\n"
            );
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("baton-redis-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return Some(server);
            }
        }
        panic!("redis-server did not start; log:\n{}", server.log());
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new(binary())
            .arg("--port")
            .arg(self.port.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        if self.wait_ready(Duration::from_secs(10)) {
            true
        } else {
            self.kill();
            false
        }
    }

    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return false;
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// `true` when the server answers `PING` within 200 ms.
    pub fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's working directory (RDB and AOF files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server (SIGKILL) and reaps it. Data not persisted is lost.
    pub fn stop(&mut self) {
        self.resume();
        self.kill();
    }

    /// Starts the server again on the same port and directory.
    ///
    /// # Panics
    /// When it does not come up.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server did not restart; log:\n{}",
            self.log()
        );
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(signal)
                .arg(pid.to_string())
                .status();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- redis-server log (port {}) ---\n{}",
                self.port,
                self.log()
            );
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_pings_stops_and_restarts() {
        let Some(mut server) = RedisServer::start() else {
            return;
        };
        assert!(server.ping());
        let port = server.port();
        server.stop();
        assert!(!server.ping());
        server.restart();
        assert_eq!(server.port(), port);
        assert!(server.ping());
        server.pause();
        assert!(!server.ping(), "a paused server does not answer");
        server.resume();
        assert!(server.ping());
    }
}

/// A Redis Cluster of three masters (no replicas) on loopback ports, created with
/// `redis-cli --cluster create`; every node is killed and reaped on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers and joins them, or skips like
    /// [`RedisServer::start`].
    ///
    /// # Panics
    /// When the cluster does not form.
    pub fn start() -> Option<Self> {
        Self::start_with_replicas(0)
    }

    /// Three masters with `replicas` replicas each.
    ///
    /// # Panics
    /// As [`RedisCluster::start`].
    pub fn start_with_replicas(replicas: usize) -> Option<Self> {
        let mut nodes = Vec::new();
        for _ in 0..3 * (1 + replicas) {
            let node = RedisServer::start_with(&[
                "--save",
                "",
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ])?;
            nodes.push(node);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create (package redis-tools)");
        assert!(
            output.status.success(),
            "cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.nodes.iter().all(|n| n.cluster_ok()) {
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach state ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Replicas count only once they are in sync with their masters.
        while !cluster.nodes.iter().all(|n| {
            n.command(&["INFO", "replication"]).is_some_and(|info| {
                info.contains("role:master") || info.contains("master_link_status:up")
            })
        }) {
            assert!(Instant::now() < deadline, "the replicas did not sync");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(cluster)
    }

    /// `redis://127.0.0.1:<port>` of every node (seed nodes for a cluster client).
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port()))
            .collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes, to stop or restart one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The node that is master for `key` now (by `CLUSTER KEYSLOT` and `CLUSTER NODES`).
    pub fn master_of(&self, key: &str) -> Option<usize> {
        let slot: u16 = self.nodes.iter().find_map(|n| {
            let reply = n.command(&["CLUSTER", "KEYSLOT", key])?;
            reply.trim().trim_start_matches(':').parse().ok()
        })?;
        let nodes = self
            .nodes
            .iter()
            .find_map(|n| n.command(&["CLUSTER", "NODES"]))?;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let port: u16 = fields[1].split(['@', ':']).nth(1)?.parse().ok()?;
            let serves = fields[8..].iter().any(|range| match range.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot)
                        && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => range.parse::<u16>() == Ok(slot),
            });
            if serves {
                return self.nodes.iter().position(|n| n.port() == port);
            }
        }
        None
    }
}

impl RedisServer {
    /// Runs one command with `redis-cli` and returns its raw output, or `None`.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `true` when `CLUSTER INFO` reports `cluster_state:ok`.
    fn cluster_ok(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"CLUSTER INFO\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 4096];
        let Ok(n) = stream.read(&mut buf) else {
            return false;
        };
        String::from_utf8_lossy(&buf[..n]).contains("cluster_state:ok")
    }
}

/// A TCP relay on 127.0.0.1 in front of a server (Redis, say) that loses replies on demand:
/// armed with [`drop_next_reply`](Self::drop_next_reply), it lets the next request through,
/// reads the server's reply, and closes the client's connection instead of delivering it:
/// the command ran, the client never learns its outcome. Everything else is relayed as is.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    armed: Arc<AtomicBool>,
    /// When set, only a reply chunk ending with these bytes is lost (the others pass).
    ending: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    dropped: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Relays a new port on 127.0.0.1 to `127.0.0.1:upstream`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let proxy = FaultProxy {
            port,
            armed: Arc::default(),
            ending: Arc::default(),
            dropped: Arc::default(),
            stop: Arc::default(),
        };
        let (armed, dropped, stop, ending) = (
            proxy.armed.clone(),
            proxy.dropped.clone(),
            proxy.stop.clone(),
            proxy.ending.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) {
                            relay(
                                client,
                                server,
                                armed.clone(),
                                dropped.clone(),
                                ending.clone(),
                            );
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        proxy
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Loses the next reply the server sends on any connection, and that connection with it.
    pub fn drop_next_reply(&self) {
        *self
            .ending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Loses the next reply chunk that ends with `suffix` (earlier chunks pass), and that
    /// connection with it: for a protocol whose reply to one request comes in parts, the part
    /// that says the request is done (PostgreSQL's `ReadyForQuery`, `Z\0\0\0\x05I`: the
    /// transaction committed).
    pub fn drop_next_reply_ending_with(&self, suffix: &[u8]) {
        *self
            .ending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(suffix.to_vec());
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many replies were lost so far.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn relay(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
    ending: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
) {
    let (Ok(mut client_read), Ok(mut server_write)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if server_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = server_write.shutdown(Shutdown::Both);
    });
    let (mut server_read, mut client_write) = (server, client);
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match server_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let matches = ending
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .as_ref()
                        .is_none_or(|suffix| buf[..n].ends_with(suffix));
                    if matches && armed.swap(false, Ordering::SeqCst) {
                        dropped.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    if client_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = client_write.shutdown(Shutdown::Both);
        let _ = server_read.shutdown(Shutdown::Both);
    });
}
