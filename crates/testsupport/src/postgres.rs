//! PostgreSQL instances: the shared one ([`pg_server`], [`pg_db`]) and private ones
//! ([`PgServer`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::os;
use crate::server::{Engine, PASSWORD, ServerInfo, TestDb, USER};
use crate::shared::{self, Launched};
use crate::tempdir::TempDir;

/// Bump when the way instances are set up changes in a way the settings below do not show:
/// shared servers with another stamp are replaced.
const SETUP_REVISION: u32 = 2;

/// The OS user that runs the server when the tests run as root.
const OS_USER: &str = "postgres";

/// Server settings (besides port, socket directory and plugin list).
const SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "'127.0.0.1'"),
    ("wal_level", "logical"),
    ("max_replication_slots", "64"),
    ("max_wal_senders", "20"),
    ("max_connections", "200"),
    ("fsync", "off"),
    ("full_page_writes", "off"),
    // Unlimited: `pontoon run`'s retention preflight samples the whole cluster's WAL
    // rate for 300 ms, and on this shared server another test's bulk load can make that
    // sample 150 MB/s, an "8998 MB during the copy" refusal against 8GB (seen in CI).
    // The refusal itself is tested on a private server set to 1MB (wal2json.rs); tests
    // drop their slots, and the server lives in a temporary directory.
    ("max_slot_wal_keep_size", "-1"),
    ("shared_buffers", "'128MB'"),
];

const PG_HBA: &str = "\
# written by pontoon-testsupport
local all all trust
host all all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
";

/// The PostgreSQL installation the harness drives.
#[derive(Debug)]
struct PgBins {
    dir: PathBuf,
    /// `postgres --version`.
    version: String,
    /// Value for `output_plugin_libraries` (PostgreSQL 15.19+ only lists pgoutput and
    /// test_decoding by default, and wal2json refuses to load); None on servers without it.
    plugin_libraries: Option<String>,
}

impl PgBins {
    fn bin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn bins() -> &'static PgBins {
    static BINS: OnceLock<PgBins> = OnceLock::new();
    BINS.get_or_init(|| {
        let dir = bin_dir();
        for name in ["initdb", "pg_ctl", "postgres", "psql"] {
            if !dir.join(name).is_file() {
                panic!("PostgreSQL's {name} is missing from {}; {}", dir.display(), os::INSTALL_HINT);
            }
        }
        let wal2json = dir.with_file_name("lib").join("wal2json.so");
        if !wal2json.is_file() {
            panic!("{} is missing; {}", wal2json.display(), os::INSTALL_HINT);
        }
        let postgres = dir.join("postgres");
        let version = os::output(std::process::Command::new(&postgres).arg("--version"));
        let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
        let described = os::output(std::process::Command::new(&postgres).arg("--describe-config"));
        let plugin_libraries = String::from_utf8_lossy(&described.stdout)
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                (fields.first() == Some(&"output_plugin_libraries") && fields.len() > 4).then(|| fields[4].to_owned())
            })
            .map(|default| {
                if default.split(',').any(|lib| lib.trim() == "wal2json") {
                    default
                } else if default.trim().is_empty() {
                    "wal2json".to_owned()
                } else {
                    format!("{default}, wal2json")
                }
            });
        PgBins { dir, version, plugin_libraries }
    })
}

/// `/usr/lib/postgresql/15/bin`, else the newest `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let preferred = root.join("15/bin");
    if preferred.join("pg_ctl").is_file() {
        return preferred;
    }
    let newest = std::fs::read_dir(root).ok().and_then(|entries| {
        entries
            .flatten()
            .filter_map(|e| {
                let major: f64 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("pg_ctl").is_file().then_some((major, bin))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, bin)| bin)
    });
    newest.unwrap_or_else(|| panic!("no PostgreSQL server under {}/*/bin; {}", root.display(), os::INSTALL_HINT))
}

/// The settings file (`data/pontoon.conf`, included from `postgresql.conf`).
fn settings(port: u16, run: &Path) -> String {
    let mut conf = String::from("# written by pontoon-testsupport\n");
    for (name, value) in SETTINGS {
        let _ = writeln!(conf, "{name} = {value}");
    }
    if let Some(libs) = &bins().plugin_libraries {
        let _ = writeln!(conf, "output_plugin_libraries = '{libs}'");
    }
    let _ = writeln!(conf, "port = {port}");
    let _ = writeln!(conf, "unix_socket_directories = '{}'", run.display());
    conf
}

fn info(dir: &Path, port: u16) -> ServerInfo {
    let bins = bins();
    ServerInfo {
        engine: Engine::Postgres,
        port,
        socket_dir: dir.join("run"),
        dir: dir.to_owned(),
        bin_dir: bins.dir.clone(),
        client: bins.bin("psql"),
        server_bin: bins.bin("postgres"),
    }
}

/// initdb, configure, start and set up an instance in `dir` (empty but for a lock file).
fn launch(dir: &Path) -> Launched {
    let bins = bins();
    let data = dir.join("data");
    let run = dir.join("run");
    check_socket_path(&run);
    os::make_dir(&data, 0o700);
    os::give_to(&data, OS_USER);
    os::make_dir(&run, 0o755);
    os::give_to(&run, OS_USER);

    let out = os::output(os::command_as(OS_USER, &bins.bin("initdb")).arg("-D").arg(&data).args([
        "-A",
        "trust",
        "-U",
        "postgres",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    ]));
    if !out.status.success() {
        panic!("initdb failed in {}: {}", data.display(), os::describe(&out));
    }
    os::write_file(&data.join("pg_hba.conf"), PG_HBA);
    let conf_path = data.join("postgresql.conf");
    let mut conf =
        std::fs::read_to_string(&conf_path).unwrap_or_else(|e| panic!("cannot read {}: {e}", conf_path.display()));
    conf.push_str("\ninclude 'pontoon.conf'\n");
    os::write_file(&conf_path, &conf);

    // A port picked as free may be taken before the server binds it: retry with another.
    let mut attempt = 0;
    let port = loop {
        attempt += 1;
        let port = os::free_port();
        os::write_file(&data.join("pontoon.conf"), &settings(port, &run));
        match pg_ctl_start(dir) {
            Ok(()) => break port,
            Err(e) if attempt < 3 && e.contains("Address already in use") => continue,
            Err(e) => panic!("{e}"),
        }
    };

    let info = info(dir, port);
    info.admin_sql(&format!("CREATE ROLE {USER} WITH LOGIN SUPERUSER REPLICATION PASSWORD '{PASSWORD}'"));
    let pid = postmaster_pid(dir).expect("postmaster.pid after a successful start");
    Launched { port, pid }
}

/// Unix socket paths are limited to 107 bytes.
fn check_socket_path(run: &Path) {
    let len = run.join(".s.PGSQL.65535.lock").as_os_str().len();
    assert!(
        len < 100,
        "socket directory {} is too long for a unix socket; use a shorter PONTOON_TEST_DIR",
        run.display()
    );
}

/// `pg_ctl start -w` on the instance in `dir`; the error carries pg_ctl's output and the
/// server log of this attempt.
fn pg_ctl_start(dir: &Path) -> Result<(), String> {
    let log = dir.join("run/postgres.log");
    let from = os::file_len(&log);
    let out = os::output(
        os::command_as(OS_USER, &bins().bin("pg_ctl"))
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-s", "start"]),
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "pg_ctl start failed for {}: {}\n{}",
            dir.display(),
            os::describe(&out),
            os::log_tail_from(&log, from, 40)
        ))
    }
}

fn pg_ctl_stop(dir: &Path, mode: &str) -> Result<(), String> {
    let out = os::output(
        os::command_as(OS_USER, &bins().bin("pg_ctl"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-m", mode, "-w", "-t", "60", "-s", "stop"]),
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "pg_ctl stop failed for {}: {}\n{}",
            dir.display(),
            os::describe(&out),
            os::log_tail(&dir.join("run/postgres.log"), 40)
        ))
    }
}

/// Stop a server left running in `dir` (replaced or orphaned) with an immediate shutdown:
/// unlike SIGKILL, that releases its shared memory.
pub(crate) fn stop_leftover(dir: &Path) {
    if postmaster_pid(dir).is_some() {
        let _ = pg_ctl_stop(dir, "immediate");
    }
}

/// The pid of the running postmaster of the instance in `dir`, if it runs.
fn postmaster_pid(dir: &Path) -> Option<u32> {
    let data = dir.join("data");
    os::read_pid(&data.join("postmaster.pid")).filter(|&pid| os::server_alive(pid, &data))
}

/// Replace the pid on the first line of a PostgreSQL lock file with one above any pid_max.
fn mark_lock_file_stale(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let rest = text.split_once('\n').map_or("", |(_, rest)| rest);
    let _ = std::fs::write(path, format!("{}\n{rest}", i32::MAX));
}

/// The shared PostgreSQL server, started by the first test process that needs it and reused
/// by every later one (see the crate docs).
pub fn pg_server() -> &'static ServerInfo {
    static SERVER: OnceLock<ServerInfo> = OnceLock::new();
    SERVER.get_or_init(|| {
        let bins = bins();
        let stamp = format!(
            "pontoon-testsupport postgres setup {SETUP_REVISION}\n{}\n{}\n{}",
            bins.dir.display(),
            bins.version,
            settings(0, Path::new("RUN"))
        );
        let (dir, port) = shared::shared_instance("pg", &stamp, stop_leftover, launch);
        info(&dir, port)
    })
}

/// A fresh database on the shared PostgreSQL server, owned by [`USER`]. Dropped (in the
/// background) when the handle is, unless the test panicked (then only its replication slots go).
pub fn pg_db() -> TestDb {
    pg_server().create_db()
}

/// A PostgreSQL instance of its own, for tests that stop, kill or restart a server.
///
/// Lives in its own directory under `<servers dir>/private/` on its own port; dropping it
/// stops the server and removes the directory.
#[derive(Debug)]
pub struct PgServer {
    info: ServerInfo,
    dir: TempDir,
}

impl PgServer {
    /// initdb and start a new instance (about a second).
    pub fn start_private() -> PgServer {
        let dir = shared::private_instance_dir("pg");
        let launched = launch(dir.path());
        PgServer { info: info(dir.path(), launched.port), dir }
    }

    /// Where it listens and which binaries drive it.
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// TCP port on 127.0.0.1 (the same across restarts).
    pub fn port(&self) -> u16 {
        self.info.port
    }

    /// Connection URL for `db` as [`USER`].
    pub fn url(&self, db: &str) -> String {
        self.info.url(db)
    }

    /// A fresh database on this server (not dropped: the whole instance goes away).
    pub fn create_db(&self) -> TestDb {
        self.info.create_db_inner(false)
    }

    /// The postmaster's pid while the server runs.
    pub fn pid(&self) -> Option<u32> {
        postmaster_pid(self.dir.path())
    }

    /// Whether the server runs.
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Clean shutdown (`pg_ctl stop -m fast`), waiting for it.
    pub fn stop(&self) {
        pg_ctl_stop(self.dir.path(), "fast").unwrap_or_else(|e| panic!("{e}"));
    }

    /// Crash: SIGKILL the postmaster and all its backends, and wait until they are gone.
    /// Nothing is flushed; the next [`PgServer::start`] runs crash recovery.
    pub fn kill(&self) {
        if let Some(pid) = self.pid() {
            os::kill_tree(pid);
            // The dead postmaster may linger as a zombie until init reaps it (over a second
            // in some containers), and a new postmaster refuses to start while the pid in its
            // lock files exists. Point them at a pid that cannot exist instead: the new
            // postmaster then takes them over as stale and, unlike with the files deleted,
            // still cleans up the old shared memory (named in postmaster.pid).
            let socket_lock = format!(".s.PGSQL.{}.lock", self.info.port);
            for lock in [self.dir.join("data/postmaster.pid"), self.info.socket_dir.join(socket_lock)] {
                mark_lock_file_stale(&lock);
            }
        }
    }

    /// Start again on the same port and data directory (no-op while it runs).
    pub fn start(&self) {
        if self.is_running() {
            return;
        }
        pg_ctl_start(self.dir.path()).unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(pid) = self.pid()
            && pg_ctl_stop(self.dir.path(), "immediate").is_err()
        {
            os::kill_tree(pid);
        }
        // The directory (a field) is removed next.
    }
}
