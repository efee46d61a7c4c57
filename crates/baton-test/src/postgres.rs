//! A real PostgreSQL server for tests: `initdb` into a temporary directory, `pg_ctl` on a free
//! loopback port, signals by the postmaster's pid (kill, pause, restart).
//!
//! The binaries are found in `BATON_PG_BINDIR`, on `PATH`, or in Debian's
//! `/usr/lib/postgresql/<version>/bin` (the newest). PostgreSQL refuses to run as root: as
//! root the server runs as the `postgres` user (`runuser`), its directory handed to it.
//! Without the binaries [`PgServer::start`] prints a loud message and returns `None` (the
//! test then skips), unless `BATON_REQUIRE_POSTGRES=1`, when it panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::{COUNTER, free_port};

fn required() -> bool {
    std::env::var("BATON_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
fn bindir() -> Option<PathBuf> {
    let has = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("BATON_PG_BINDIR") {
        return Some(PathBuf::from(dir)).filter(|d| has(d));
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has(d))
    {
        // Where the programs really are (beside psql and createdb), not a directory of links.
        return std::fs::canonicalize(dir.join("initdb"))
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|d| has(d))
            .or(Some(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

/// `true` when this process runs as root (PostgreSQL's programs then run as `postgres`).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A PostgreSQL server of the test's own on 127.0.0.1, user `postgres` with trust
/// authentication. Stopped (immediate shutdown) and its directory removed on drop; its log is
/// printed when the test panics.
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());

impl PgServer {
    /// Starts a server (see the module docs), or skips.
    ///
    /// # Panics
    /// When the server does not start, or the binaries are missing under
    /// `BATON_REQUIRE_POSTGRES=1`.
    pub fn start() -> Option<Self> {
        let Some(bin) = bindir() else {
            assert!(
                !required(),
                "PostgreSQL's initdb/pg_ctl not found and BATON_REQUIRE_POSTGRES=1"
            );
            eprintln!(
                "\n********************************************************************\n\
                 SKIPPED: no PostgreSQL server binaries here (apt-get install postgresql,\n\
                 or set BATON_PG_BINDIR). BATON_REQUIRE_POSTGRES=1 makes this test fail.\n\
                 ********************************************************************\n"
            );
            return None;
        };
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("baton-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let mut server = PgServer {
            bin,
            dir,
            port: 0,
            as_postgres: is_root(),
        };
        if server.as_postgres {
            let owned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&server.dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                owned,
                "chown of {} to postgres failed",
                server.dir.display()
            );
        }
        let init = server
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg("-D")
            .arg(server.data())
            .output()
            .expect("run initdb");
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return Some(server);
            }
        }
        panic!("postgres did not start; log:\n{}", server.log());
    }

    /// One server for every test of this process that asks while another holds it (the
    /// conformance suite's many short tests share it, each with a database of its own).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn shared() -> Option<Arc<Self>> {
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(server) = shared.upgrade() {
            return Some(server);
        }
        let server = Arc::new(Self::start()?);
        *shared = Arc::downgrade(&server);
        Some(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// A PostgreSQL program, run as `postgres` when this process is root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // A directory the postgres user may enter (not the test's, which may be closed to it).
        command.stdin(Stdio::null()).current_dir(&self.dir);
        command
    }

    fn spawn(&mut self) -> bool {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c full_page_writes=off \
             -c max_connections=300 -c shared_buffers=64MB",
            self.port,
            self.dir.display()
        );
        let started = self
            .command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "30", "-o", &options])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        started && self.ready(Duration::from_secs(10))
    }

    fn ready(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database of a fresh name; returns its URL.
    ///
    /// # Panics
    /// When `createdb` fails.
    pub fn create_database(&self) -> String {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("test_{n}");
        let out = self
            .command("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg(&name)
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    /// Runs `sql` with `psql` in `database`; returns its output (unaligned, tuples only).
    ///
    /// # Panics
    /// When psql fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args([
                "-d",
                database,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The postmaster's pid, while running.
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The postmaster and every process it started.
    fn processes(&self) -> Vec<u32> {
        let Some(pid) = self.pid() else {
            return Vec::new();
        };
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        std::iter::once(pid)
            .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
            .collect()
    }

    fn signal(&self, signal: &str, pids: &[u32]) {
        if pids.is_empty() {
            return;
        }
        let _ = Command::new("kill")
            .arg(signal)
            .args(pids.iter().map(u32::to_string))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Freezes the server and all its backends (SIGSTOP): connections stay open, nothing
    /// answers.
    pub fn pause(&self) {
        self.signal("-STOP", &self.processes());
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT", &self.processes());
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`): every connection drops.
    pub fn stop(&self) {
        self.resume();
        let _ = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-t", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Stops the server at once and starts it again on the same port and data.
    ///
    /// # Panics
    /// When it does not come back.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "postgres did not restart; log:\n{}",
            self.log()
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- postgres log (port {}) ---\n{}", self.port, self.log());
        }
        self.stop();
        if let Some(pid) = self.pid() {
            // pg_ctl could not stop it: by pid.
            self.signal("-KILL", &[pid]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_pauses_and_restarts() {
        let Some(mut server) = PgServer::start() else {
            return;
        };
        assert_eq!(server.psql("postgres", "SELECT 1 + 1").trim(), "2");
        let url = server.create_database();
        let db = url.rsplit('/').next().unwrap().to_owned();
        assert_eq!(server.psql(&db, "SELECT current_database()").trim(), db);
        let before = server.pid();
        server.restart();
        assert_ne!(server.pid(), before);
        assert_eq!(server.psql(&db, "SELECT 2").trim(), "2");
    }
}
