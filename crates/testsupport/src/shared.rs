//! Where server instances live, and how one instance per engine is shared by every test
//! process.
//!
//! Layout of the base directory (`$PONTOON_TEST_DIR`, else `<temp>/pontoon-test-servers-v1`):
//!
//! ```text
//! pg/        lock  stamp  port  pid  data/  run/     the shared PostgreSQL instance
//! mariadb/   lock  stamp  port  pid  data/  run/     the shared MariaDB instance
//! private/   pg-<owner pid>-..., mariadb-<owner pid>-...   private instances (fault tests)
//! ```
//!
//! `stamp` is written last, once the instance is fully set up; `scripts/stop-test-servers.sh`
//! reads `pid` (and `data/`) to stop the shared instances.

use std::fs;
use std::path::{Path, PathBuf};

use crate::os;
use crate::tempdir::TempDir;

/// Every pid file an instance directory may hold (relative to it): ours, PostgreSQL's and
/// MariaDB's. Killing by all of them catches a server whose setup died half-way.
pub(crate) const PID_FILES: &[&str] = &["pid", "data/postmaster.pid", "run/mysqld.pid"];

/// The directory holding the shared servers and private instances.
///
/// `$PONTOON_TEST_DIR` if set (made absolute), else `<temp dir>/pontoon-test-servers-v1`. It
/// must be reachable by the `postgres` and `mysql` users when the tests run as root.
pub fn servers_dir() -> PathBuf {
    match std::env::var_os("PONTOON_TEST_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { std::env::current_dir().expect("current directory").join(dir) }
        }
        None => std::env::temp_dir().join("pontoon-test-servers-v1"),
    }
}

/// A server process that a launcher started and set up.
#[derive(Debug)]
pub(crate) struct Launched {
    pub(crate) port: u16,
    pub(crate) pid: u32,
}

/// Reuse the shared instance in `<servers_dir>/<sub>` or start a fresh one there.
///
/// Holds an exclusive lock on `<sub>/lock` while it decides, so concurrent test processes
/// start one server between them. The instance is reused when the stamp matches `stamp`, the
/// recorded pid is a live server working in `data/`, and its port accepts connections.
/// Otherwise `stop(dir)` ends whatever still runs there, the directory is wiped (all but the
/// lock) and `launch(dir)` starts a new instance. Returns the directory and the port.
pub(crate) fn shared_instance(
    sub: &str,
    stamp: &str,
    stop: impl FnOnce(&Path),
    launch: impl FnOnce(&Path) -> Launched,
) -> (PathBuf, u16) {
    let base = servers_dir();
    os::make_dir(&base, 0o755);
    let dir = base.join(sub);
    os::make_dir(&dir, 0o755);
    let lock_path = dir.join("lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", lock_path.display()));
    lock.lock().unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));

    let read = |name: &str| fs::read_to_string(dir.join(name)).ok();
    let port = read("port").and_then(|p| p.trim().parse::<u16>().ok());
    let pid = os::read_pid(&dir.join("pid"));
    if let (Some(found), Some(port), Some(pid)) = (read("stamp"), port, pid)
        && found == stamp
        && os::server_alive(pid, &dir.join("data"))
        && os::port_open(port)
    {
        return (dir, port);
    }

    stop(&dir);
    os::kill_servers_in(&dir, PID_FILES);
    wipe_except_lock(&dir);
    let launched = launch(&dir);
    os::write_file(&dir.join("pid"), &format!("{}\n", launched.pid));
    os::write_file(&dir.join("port"), &format!("{}\n", launched.port));
    os::write_file(&dir.join("stamp"), stamp);
    drop(lock);
    (dir, launched.port)
}

fn wipe_except_lock(dir: &Path) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries.flatten() {
        if entry.file_name() == "lock" {
            continue;
        }
        let path = entry.path();
        let result = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        result.unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display()));
    }
}

/// A fresh directory for a private instance: `<servers_dir>/private/<tag>-<pid>-<n>-<random>`.
///
/// First removes the instances of test processes that are gone (killed by a timeout before
/// their `Drop` ran): their servers are stopped and their directories deleted.
pub(crate) fn private_instance_dir(tag: &str) -> TempDir {
    let private = servers_dir().join("private");
    os::make_dir(&servers_dir(), 0o755);
    os::make_dir(&private, 0o755);
    sweep_orphans(&private);
    TempDir::new_in(&private, tag)
}

fn sweep_orphans(private: &Path) {
    let Ok(entries) = fs::read_dir(private) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        // "<tag>-<owner pid>-<counter>-<random>"
        let Some((tag, owner)) = name.to_str().and_then(|n| {
            let mut parts = n.split('-');
            Some((parts.next()?, parts.next()?.parse::<u32>().ok()?))
        }) else {
            continue;
        };
        if owner == std::process::id() || os::alive(owner) {
            continue;
        }
        if tag == "pg" {
            crate::postgres::stop_leftover(&entry.path());
        }
        os::kill_servers_in(&entry.path(), PID_FILES);
        let _ = fs::remove_dir_all(entry.path());
    }
}
