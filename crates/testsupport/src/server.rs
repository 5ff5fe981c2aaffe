//! What a test needs to know about a running server, and the databases it creates on it.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::os;

/// The login every server is set up with (a superuser with replication rights).
pub const USER: &str = "pontoon";
/// The password of [`USER`].
pub const PASSWORD: &str = "pontoon";

/// Which database engine a server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// PostgreSQL (15, with wal2json).
    Postgres,
    /// MariaDB (10.11, binlog in ROW format).
    MariaDb,
}

/// A running server instance: where it listens and which binaries drive it.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The engine.
    pub engine: Engine,
    /// TCP port on `127.0.0.1`.
    pub port: u16,
    /// Directory of the unix socket: PostgreSQL's `.s.PGSQL.<port>` or MariaDB's `mysqld.sock`
    /// (see [`ServerInfo::socket`]). Connections over it need no password.
    pub socket_dir: PathBuf,
    /// Root directory of the instance: `data/` is the data directory, `run/` holds the
    /// socket, logs (and MariaDB's binlogs).
    pub dir: PathBuf,
    /// Directory of the client tools: PostgreSQL's `bin/` (psql, pg_dump, pg_recvlogical...)
    /// or the one holding `mariadb` (mariadb-dump, mariadb-binlog...).
    pub bin_dir: PathBuf,
    /// The command-line client: `psql` or `mariadb`.
    pub client: PathBuf,
    /// The server executable: `postgres` or `mariadbd`.
    pub server_bin: PathBuf,
}

/// The shared servers hand out this description; private servers use the same type.
pub type SharedInfo = ServerInfo;

/// Who a client command connects as.
#[derive(Clone, Copy)]
enum Login {
    /// The engine's superuser over the unix socket (`postgres` / MariaDB `root`).
    Admin,
    /// [`USER`] (over the unix socket for PostgreSQL; MariaDB uses root there too).
    Test,
}

impl ServerInfo {
    /// Connection URL for `db` as [`USER`]: `postgres://pontoon:pontoon@127.0.0.1:PORT/DB` or
    /// `mysql://pontoon:pontoon@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        let scheme = match self.engine {
            Engine::Postgres => "postgres",
            Engine::MariaDb => "mysql",
        };
        format!("{scheme}://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// The unix socket file.
    pub fn socket(&self) -> PathBuf {
        match self.engine {
            Engine::Postgres => self.socket_dir.join(format!(".s.PGSQL.{}", self.port)),
            Engine::MariaDb => self.socket_dir.join("mysqld.sock"),
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log: where to look when it misbehaves.
    pub fn log_path(&self) -> PathBuf {
        match self.engine {
            Engine::Postgres => self.socket_dir.join("postgres.log"),
            Engine::MariaDb => self.socket_dir.join("error.log"),
        }
    }

    /// Create a fresh, uniquely named database (`t_<pid>_<counter>_<random>`; MariaDB's in
    /// utf8mb4 / utf8mb4_bin). It is dropped when the handle is, unless the test is panicking
    /// (kept for a post-mortem, without its replication slots) or `PONTOON_TEST_KEEP_DBS`
    /// is set.
    pub fn create_db(&self) -> TestDb {
        self.create_db_inner(true)
    }

    pub(crate) fn create_db_inner(&self, drop_on_drop: bool) -> TestDb {
        let name = os::unique_name("t", '_');
        match self.engine {
            Engine::Postgres => self.admin_sql(&format!("CREATE DATABASE {name} OWNER {USER}")),
            Engine::MariaDb => {
                self.admin_sql(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
            }
        };
        TestDb {
            url: self.url(&name),
            drop_on_drop: drop_on_drop && std::env::var_os("PONTOON_TEST_KEEP_DBS").is_none(),
            name,
            server: self.clone(),
        }
    }

    /// Run SQL as the superuser (PostgreSQL `postgres` in database `postgres`, MariaDB `root`
    /// with no default database); panics with the client's stderr on failure.
    pub fn admin_sql(&self, sql: &str) -> String {
        self.try_admin_sql(sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`ServerInfo::admin_sql`], returning the failure instead of panicking.
    pub fn try_admin_sql(&self, sql: &str) -> Result<String, String> {
        self.run_sql(Login::Admin, None, sql)
    }

    /// A client command (psql / mariadb) with connection options; `db` None is the
    /// maintenance database.
    fn client_command(&self, login: Login, db: Option<&str>) -> Command {
        let mut cmd = Command::new(&self.client);
        match self.engine {
            Engine::Postgres => {
                let user = match login {
                    Login::Admin => "postgres",
                    Login::Test => USER,
                };
                cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
                    .arg(&self.socket_dir)
                    .args(["-p", &self.port.to_string(), "-U", user, "-d"])
                    .arg(db.unwrap_or("postgres"))
                    .env("PGCONNECT_TIMEOUT", "10")
                    .env_remove("PGOPTIONS")
                    .env_remove("PGSERVICE");
            }
            Engine::MariaDb => {
                // `--no-defaults` must come first. `-r`: values verbatim (no \t \n escaping).
                cmd.args([
                    "--no-defaults",
                    "-N",
                    "-B",
                    "-r",
                    "--default-character-set=utf8mb4",
                    "--local-infile=1",
                    "--connect-timeout=10",
                    "-u",
                    "root",
                ])
                .arg(format!("--socket={}", self.socket().display()));
                if let Some(db) = db {
                    cmd.arg(db);
                }
            }
        }
        cmd
    }

    fn run_sql(&self, login: Login, db: Option<&str>, sql: &str) -> Result<String, String> {
        let mut cmd = self.client_command(login, db);
        let out = os::output_with_input(&mut cmd, sql);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "SQL failed on {:?} port {} db {}: {}\n--- SQL ---\n{sql}\n--- stderr ---\n{}",
                self.engine,
                self.port,
                db.unwrap_or("-"),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            ))
        }
    }

    /// Drop a database in the background (the test does not wait for it): terminate its
    /// sessions, drop its inactive replication slots, drop it. With `keep_db` (a failed
    /// test's database, kept for inspection) only the slots go on PostgreSQL: a slot
    /// left behind holds the shared server's WAL forever.
    fn drop_db_in_background(&self, name: &str, keep_db: bool) {
        let mut cmd = self.client_command(Login::Admin, None);
        match self.engine {
            Engine::Postgres => {
                let lit = format!("'{name}'");
                cmd.args([
                    "-c",
                    &format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = {lit} AND pid <> pg_backend_pid()"
                    ),
                    // a terminated holder releases its slot a moment later
                    "-c",
                    "SELECT pg_sleep(0.2)",
                    "-c",
                    &format!(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                         WHERE database = {lit} AND NOT active"
                    ),
                ]);
                if !keep_db {
                    cmd.args(["-c", &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")]);
                }
            }
            Engine::MariaDb if keep_db => return,
            Engine::MariaDb => {
                cmd.args(["-e", &format!("DROP DATABASE IF EXISTS `{name}`")]);
            }
        }
        // Own process group and no inherited stdio: the drop may outlive the test process
        // without being killed with it or holding nextest's output pipes open.
        use std::os::unix::process::CommandExt;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
        if let Ok(mut child) = cmd.spawn() {
            // Reap it if we live long enough; otherwise it is orphaned and finishes alone.
            std::thread::spawn(move || child.wait());
        }
    }
}

/// A database of its own for one test, on a shared or private server.
#[derive(Debug)]
pub struct TestDb {
    /// Connection URL as [`USER`] over TCP.
    pub url: String,
    /// Database name (`t_<pid>_<counter>_<random>`, a valid unquoted identifier).
    pub name: String,
    server: ServerInfo,
    drop_on_drop: bool,
}

impl TestDb {
    /// Run SQL (one or more statements) through the CLI client in this database and return
    /// its stdout, trimmed; panics with the client's stderr on failure.
    ///
    /// PostgreSQL: `psql -X -q -A -t -v ON_ERROR_STOP=1` as [`USER`] (unaligned, tuples only:
    /// columns separated by `|`, NULL is empty). MariaDB: `mariadb -N -B -r` as root
    /// (columns separated by tabs, NULL is `NULL`, utf8mb4). Each statement's rows are
    /// printed one per line.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`TestDb::sql`], returning the failure (with the client's stderr) instead of panicking.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        self.server.run_sql(Login::Test, Some(&self.name), sql)
    }

    /// The server holding this database.
    pub fn server(&self) -> &ServerInfo {
        &self.server
    }

    /// The engine of the server holding this database.
    pub fn engine(&self) -> Engine {
        self.server.engine
    }

    /// Path of the server's unix socket (password-less connections).
    pub fn socket(&self) -> PathBuf {
        self.server.socket()
    }

    /// Keep the database after the test (for inspection).
    pub fn keep(mut self) -> Self {
        self.drop_on_drop = false;
        self
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.drop_on_drop {
            self.server.drop_db_in_background(&self.name, std::thread::panicking());
        }
    }
}
