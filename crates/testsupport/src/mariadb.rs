//! MariaDB instances: the shared one ([`mysql_server`], [`mysql_db`]) and private ones
//! ([`MariaDbServer`]).

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::os;
use crate::server::{Engine, PASSWORD, ServerInfo, TestDb, USER};
use crate::shared::{self, Launched};
use crate::tempdir::TempDir;

/// Bump when the way instances are set up changes in a way the settings below do not show:
/// shared servers with another stamp are replaced.
const SETUP_REVISION: u32 = 1;

/// The OS user that runs the server when the tests run as root.
const OS_USER: &str = "mysql";

/// How long a start may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Server settings (besides paths and port).
const SETTINGS: &[&str] = &[
    "bind-address=127.0.0.1",
    "server_id=1",
    "binlog_format=ROW",
    "binlog_row_image=FULL",
    "local_infile=ON",
    "innodb_flush_log_at_trx_commit=2",
    "sync_binlog=0",
    "skip-name-resolve",
    "max_connections=500",
    "innodb_buffer_pool_size=256M",
    "character-set-server=utf8mb4",
    "collation-server=utf8mb4_bin",
];

/// The MariaDB installation the harness drives.
#[derive(Debug)]
struct MariaBins {
    server: PathBuf,
    install_db: PathBuf,
    client: PathBuf,
    /// `mariadbd --version`.
    version: String,
}

fn bins() -> &'static MariaBins {
    static BINS: OnceLock<MariaBins> = OnceLock::new();
    BINS.get_or_init(|| {
        const DIRS: &[&str] = &["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"];
        let find = |names: &[&str]| {
            os::find_program(names, DIRS).unwrap_or_else(|| {
                panic!("MariaDB's {} is not on PATH nor in {DIRS:?}; {}", names[0], os::INSTALL_HINT)
            })
        };
        let server = find(&["mariadbd", "mysqld"]);
        let install_db = find(&["mariadb-install-db", "mysql_install_db"]);
        let client = find(&["mariadb", "mysql"]);
        let version = os::output(Command::new(&server).arg("--version"));
        let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
        MariaBins { server, install_db, client, version }
    })
}

/// The option file (`my.cnf` in the instance directory).
fn my_cnf(dir: &Path, port: u16) -> String {
    let run = dir.join("run");
    let mut cnf = String::from("# written by pontoon-testsupport\n[mariadbd]\n");
    if os::is_root() {
        let _ = writeln!(cnf, "user={OS_USER}");
    }
    let _ = writeln!(cnf, "datadir={}", dir.join("data").display());
    let _ = writeln!(cnf, "port={port}");
    let _ = writeln!(cnf, "socket={}", run.join("mysqld.sock").display());
    let _ = writeln!(cnf, "pid-file={}", run.join("mysqld.pid").display());
    let _ = writeln!(cnf, "log_bin={}", run.join("binlog").display());
    let _ = writeln!(cnf, "log_error={}", run.join("error.log").display());
    let _ = writeln!(cnf, "tmpdir={}", run.display());
    for setting in SETTINGS {
        let _ = writeln!(cnf, "{setting}");
    }
    cnf
}

fn info(dir: &Path, port: u16) -> ServerInfo {
    let bins = bins();
    ServerInfo {
        engine: Engine::MariaDb,
        port,
        socket_dir: dir.join("run"),
        dir: dir.to_owned(),
        bin_dir: bins.client.parent().map(Path::to_owned).unwrap_or_default(),
        client: bins.client.clone(),
        server_bin: bins.server.clone(),
    }
}

/// Install, start and set up an instance in `dir` (empty but for a lock file). Returns the
/// running server process.
fn launch(dir: &Path) -> (Launched, Child) {
    let bins = bins();
    let data = dir.join("data");
    let run = dir.join("run");
    assert!(
        run.join("mysqld.sock.lock").as_os_str().len() < 100,
        "socket directory {} is too long for a unix socket; use a shorter PONTOON_TEST_DIR",
        run.display()
    );
    os::make_dir(&run, 0o755);
    os::give_to(&run, OS_USER);

    let mut install = Command::new(&bins.install_db);
    install.arg("--no-defaults").arg(format!("--datadir={}", data.display())).args([
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        "--skip-name-resolve",
    ]);
    if os::is_root() {
        install.arg(format!("--user={OS_USER}"));
    }
    let out = os::output(&mut install);
    if !out.status.success() {
        panic!("mariadb-install-db failed in {}: {}", data.display(), os::describe(&out));
    }

    // A port picked as free may be taken before the server binds it: retry with another.
    let mut attempt = 0;
    let (port, child) = loop {
        attempt += 1;
        let port = os::free_port();
        os::write_file(&dir.join("my.cnf"), &my_cnf(dir, port));
        match start_server(dir, port) {
            Ok(child) => break (port, child),
            Err(e) if attempt < 3 && e.contains("Address already in use") => continue,
            Err(e) => panic!("{e}"),
        }
    };

    let mut users = String::new();
    for host in ["%", "127.0.0.1", "localhost"] {
        let _ = writeln!(
            users,
            "CREATE USER IF NOT EXISTS '{USER}'@'{host}' IDENTIFIED BY '{PASSWORD}';\n\
             GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'{host}' WITH GRANT OPTION;"
        );
    }
    info(dir, port).admin_sql(&users);
    let pid = child.id();
    (Launched { port, pid }, child)
}

/// Start `mariadbd` for the instance in `dir` and wait until it answers. The server is
/// detached (own process group, stdio to `run/mariadbd.out`) so it survives this process.
/// The error carries the tail of the error log.
fn start_server(dir: &Path, port: u16) -> Result<Child, String> {
    let run = dir.join("run");
    let error_log = run.join("error.log");
    let from = os::file_len(&error_log);
    let out_path = run.join("mariadbd.out");
    let out = File::options()
        .create(true)
        .append(true)
        .open(&out_path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", out_path.display()));
    let err = out.try_clone().unwrap_or_else(|e| panic!("cannot clone {}: {e}", out_path.display()));
    let mut child = Command::new(&bins().server)
        .arg(format!("--defaults-file={}", dir.join("my.cnf").display()))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bins().server.display()));

    let info = info(dir, port);
    let failure = |what: String| {
        format!(
            "MariaDB in {} {what}\n{}\n{}",
            dir.display(),
            os::log_tail_from(&error_log, from, 40),
            os::log_tail(&out_path, 10)
        )
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failure(format!("exited during start-up ({status})")));
        }
        if info.socket().exists() && info.try_admin_sql("SELECT 1").is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failure(format!("did not answer within {START_TIMEOUT:?}")));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The shared MariaDB server, started by the first test process that needs it and reused by
/// every later one (see the crate docs).
pub fn mysql_server() -> &'static ServerInfo {
    static SERVER: OnceLock<ServerInfo> = OnceLock::new();
    SERVER.get_or_init(|| {
        let bins = bins();
        let stamp = format!(
            "pontoon-testsupport mariadb setup {SETUP_REVISION}\n{}\n{}\n{}",
            bins.server.display(),
            bins.version,
            my_cnf(Path::new("DIR"), 0)
        );
        // The started server is not ours to wait for: it outlives this process.
        let (dir, port) = shared::shared_instance("mariadb", &stamp, |_| (), |dir| launch(dir).0);
        info(&dir, port)
    })
}

/// A fresh database (utf8mb4, utf8mb4_bin) on the shared MariaDB server. Dropped (in the
/// background) when the handle is, unless the test panicked.
pub fn mysql_db() -> TestDb {
    mysql_server().create_db()
}

/// A MariaDB instance of its own, for tests that stop, kill or restart a server.
///
/// Lives in its own directory under `<servers dir>/private/` on its own port; dropping it
/// kills the server and removes the directory.
#[derive(Debug)]
pub struct MariaDbServer {
    info: ServerInfo,
    child: Mutex<Option<Child>>,
    dir: TempDir,
}

impl MariaDbServer {
    /// Install and start a new instance (one to two seconds).
    pub fn start_private() -> MariaDbServer {
        let dir = shared::private_instance_dir("mariadb");
        let (launched, child) = launch(dir.path());
        MariaDbServer { info: info(dir.path(), launched.port), child: Mutex::new(Some(child)), dir }
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

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        let mut child = self.child();
        match child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => child.as_ref().map(Child::id),
            Some(_) => {
                *child = None;
                None
            }
            None => None,
        }
    }

    /// Whether the server runs.
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Clean shutdown (SIGTERM), waiting for the process to exit.
    pub fn stop(&self) {
        let Some(mut child) = self.child().take() else {
            return;
        };
        os::signal(&[child.id()], "TERM");
        let deadline = Instant::now() + START_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "MariaDB in {} ignored SIGTERM for {START_TIMEOUT:?}; killed it\n{}",
                    self.dir.path().display(),
                    os::log_tail(&self.info.log_path(), 40)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Crash: SIGKILL the server and wait until it is gone. The next
    /// [`MariaDbServer::start`] runs crash recovery.
    pub fn kill(&self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port and data directory (no-op while it runs).
    pub fn start(&self) {
        if self.is_running() {
            return;
        }
        let child = start_server(self.dir.path(), self.info.port).unwrap_or_else(|e| panic!("{e}"));
        *self.child() = Some(child);
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        // The directory (a field) is removed next, so there is nothing to shut down cleanly.
        self.kill();
    }
}
