//! `pontoon-test-servers`: start (or reuse) the harness's shared PostgreSQL and MariaDB
//! servers from a shell, or stop them. The benchmarks (`bench/`) use it; so can a person who
//! wants to poke at the servers the tests use.
//!
//! ```text
//! pontoon-test-servers start    # start/reuse both servers; print `export` lines for a shell
//! pontoon-test-servers stop     # stop them (scripts/stop-test-servers.sh)
//! ```
//!
//! The servers live in `$PONTOON_TEST_DIR` (else the tests' default directory, see
//! [`pontoon_testsupport::servers_dir`]). Give the benchmarks a directory of their own so
//! they never share a server with a running test:
//!
//! ```text
//! eval "$(PONTOON_TEST_DIR=/tmp/pontoon-bench-servers pontoon-test-servers start)"
//! psql "$PG_URL_BASE/postgres" -c 'select 1'
//! ```
//!
//! `start` prints, one per line, `export NAME='value'` for: `PONTOON_TEST_DIR`, `PG_PORT`,
//! `PG_URL_BASE` (`postgres://pontoon:pontoon@127.0.0.1:PORT`, append `/DB`), `PG_SOCKET_DIR`,
//! `PG_BIN_DIR`, `PG_DATA_DIR`, `MY_PORT`, `MY_URL_BASE` (`mysql://pontoon:pontoon@...`),
//! `MY_SOCKET_DIR`, `MY_SOCKET`, `MY_BIN_DIR`, `MY_DATA_DIR`. The URLs carry the harness's
//! fixed test password ([`pontoon_testsupport::PASSWORD`]) — a loopback-only test login, not a
//! secret. Over the unix sockets the engines' superusers (`postgres`, MariaDB `root`) need no
//! password.

use std::path::Path;
use std::process::{Command, ExitCode};

use pontoon_testsupport::{PASSWORD, ServerInfo, USER, mysql_server, pg_server, servers_dir};

const USAGE: &str = "usage: pontoon-test-servers start|stop\n\
    \n  start   start (or reuse) the shared PostgreSQL and MariaDB servers in $PONTOON_TEST_DIR\n\
    \x20         and print `export` lines for a shell: eval \"$(pontoon-test-servers start)\"\n\
    \n  stop    stop the servers in $PONTOON_TEST_DIR (scripts/stop-test-servers.sh)\n";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["start"] => {
            start();
            ExitCode::SUCCESS
        }
        ["stop"] => stop(),
        ["-h" | "--help" | "help"] => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn start() {
    // Start both before printing anything, so a failure prints no half-set environment.
    let pg = pg_server();
    let my = mysql_server();
    let mut lines = vec![export("PONTOON_TEST_DIR", &servers_dir().display().to_string())];
    lines.extend(exports("PG", "postgres", pg));
    lines.extend(exports("MY", "mysql", my));
    lines.push(export("MY_SOCKET", &my.socket().display().to_string()));
    for line in lines {
        println!("{line}");
    }
}

fn exports(prefix: &str, scheme: &str, server: &ServerInfo) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    vec![
        export(&format!("{prefix}_PORT"), &server.port.to_string()),
        export(&format!("{prefix}_URL_BASE"), &format!("{scheme}://{USER}:{PASSWORD}@127.0.0.1:{}", server.port)),
        export(&format!("{prefix}_SOCKET_DIR"), &path(&server.socket_dir)),
        export(&format!("{prefix}_BIN_DIR"), &path(&server.bin_dir)),
        export(&format!("{prefix}_DATA_DIR"), &path(&server.data_dir())),
    ]
}

/// `export NAME='value'`, the value single-quoted for a POSIX shell.
fn export(name: &str, value: &str) -> String {
    format!("export {name}='{}'", value.replace('\'', r"'\''"))
}

/// Stop the servers through the repository's stop script, which knows how to stop each
/// engine cleanly (and waits for a test process that is starting one).
fn stop() -> ExitCode {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/stop-test-servers.sh");
    if !script.is_file() {
        eprintln!("pontoon-test-servers: {} is missing (run from a pontoon checkout)", script.display());
        return ExitCode::FAILURE;
    }
    match Command::new("bash").arg(&script).env("PONTOON_TEST_DIR", servers_dir()).status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("pontoon-test-servers: {} failed: {status}", script.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("pontoon-test-servers: cannot run {}: {e}", script.display());
            ExitCode::FAILURE
        }
    }
}
