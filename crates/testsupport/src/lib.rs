//! Test harness for pontoon: real PostgreSQL 15 (with wal2json) and MariaDB 10.11 servers,
//! driven through their own binaries, without Docker or systemd.
//!
//! # Shared servers, one database per test
//!
//! `cargo nextest` runs every test in its own process, several at a time, so a server per
//! test would be far too slow. Instead each engine has **one shared server** that the first
//! test process needing it starts and every later process (of this run and of later runs)
//! reuses:
//!
//! - it lives in `<base>/pg/` or `<base>/mariadb/`, where `<base>` is `$PONTOON_TEST_DIR` or
//!   else `<temp dir>/pontoon-test-servers-v1` ([`servers_dir`]);
//! - a process takes an exclusive lock on `<base>/<engine>/lock` while it checks or starts
//!   the server, so concurrent processes start it once between them;
//! - the server is reused when its `stamp` file matches this build's setup (binary version
//!   and settings), the pid in `pid` is alive and working in `data/`, and the port in `port`
//!   accepts connections; otherwise the directory is wiped and a fresh server started on a
//!   free loopback port;
//! - servers keep running after the tests (the next run starts in milliseconds);
//!   `scripts/stop-test-servers.sh` stops them.
//!
//! Tests never share a database: [`pg_db`] and [`mysql_db`] create a fresh, uniquely named
//! one (`t_<pid>_<counter>_<random>`) and return a [`TestDb`] with its URL and a
//! [`TestDb::sql`] helper that runs SQL through `psql` / `mariadb`. The database is dropped
//! in the background when the handle is dropped, and kept when the test panicked (its
//! PostgreSQL replication slots are dropped all the same: they would hold the WAL).
//!
//! # Private servers for fault tests
//!
//! A test that stops, kills or restarts a server must not disturb the others: it starts a
//! [`PgServer`] or [`MariaDbServer`] of its own (`start_private`, one to two seconds) in its
//! own directory under `<base>/private/`, on its own port, and can `stop()` it cleanly,
//! `kill()` it (SIGKILL, a crash), and `start()` it again on the same port and data. Dropping
//! it kills the server and removes its directory; instances left by test processes that
//! were killed before their `Drop` ran are swept when the next private server starts.
//!
//! # Server setup
//!
//! Connections as [`USER`] / [`PASSWORD`] (superuser, replication) over TCP on 127.0.0.1;
//! the superuser (`postgres` / MariaDB `root`) needs no password over the unix socket.
//! PostgreSQL: `wal_level=logical`, wal2json allowed (`output_plugin_libraries` on 15.19+),
//! `fsync=off`, scram-sha-256 for TCP (replication included). MariaDB: binlog in ROW format
//! with FULL row images, `local_infile=ON`, utf8mb4 / utf8mb4_bin. When the tests run as root
//! the servers run as the `postgres` and `mysql` users.
//!
//! Missing binaries make the harness panic with a pointer to `scripts/install-deps.sh`.
//!
//! Environment: `PONTOON_TEST_DIR` moves the servers (on a slow disk,
//! `PONTOON_TEST_DIR=/dev/shm/pontoon-test-servers` keeps them in memory: creating a
//! PostgreSQL database is file copying, and takes 250 ms on this project's VMs' ext4);
//! `PONTOON_TEST_KEEP_DBS=1` keeps every test database for inspection.
//!
//! The crate is synchronous and depends on `std` only.

mod mariadb;
mod os;
mod postgres;
mod server;
mod shared;
mod tempdir;

use std::path::PathBuf;

pub use mariadb::{MariaDbServer, mysql_db, mysql_server};
pub use postgres::{PgServer, pg_db, pg_server};
pub use server::{Engine, PASSWORD, ServerInfo, SharedInfo, TestDb, USER};
pub use shared::servers_dir;
pub use tempdir::{TempDir, temp_dir};

/// Path of the built `pontoon` binary.
///
/// `$CARGO_BIN_EXE_pontoon` if set; else `pontoon` in the profile directory this test runs
/// from (tests run from `target/<profile>/deps/`). Panics when the binary is not there: build
/// it with `cargo build -p pontoon` (cargo builds it by itself for the CLI crate's tests).
pub fn pontoon_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_pontoon").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("path of the running test binary");
    let mut dir = exe.parent().expect("the test binary is in a directory").to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("pontoon{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "the pontoon binary is not at {}: build it with `cargo build -p pontoon`", bin.display());
    bin
}

/// Threads spinning on every core until dropped: they take the CPU from server threads
/// at random moments, as a loaded machine does, which widens race windows inside the
/// servers (for tests that must see such a race handled).
#[derive(Debug)]
pub struct BusyCpu {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyCpu {
    pub fn start(threads: usize) -> BusyCpu {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                })
            })
            .collect();
        BusyCpu { stop, threads }
    }
}

impl Drop for BusyCpu {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A child process killed (and reaped) when dropped: a test that fails midway does
/// not leave a background `pontoon run` syncing, or a load generator writing.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl KillOnDrop {
    /// Starts `cmd` with no stdin and its stdout and stderr into `log`.
    pub fn spawn_logged(cmd: &mut std::process::Command, log: std::fs::File) -> KillOnDrop {
        let out = log.try_clone().expect("clone the log file handle");
        KillOnDrop(
            cmd.stdin(std::process::Stdio::null())
                .stdout(out)
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
        )
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}
