//! Process, user, port and file plumbing shared by both engines.
//!
//! Everything here goes through `std` and `/proc` (Linux): the crate forbids `unsafe`, so
//! signals are sent with `kill(1)` and users are switched with `runuser(1)`.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The hint every "something is not installed" panic ends with.
pub(crate) const INSTALL_HINT: &str =
    "install the test dependencies with `sudo scripts/install-deps.sh` (from the repository root)";

/// True when this process runs with effective uid 0.
pub(crate) fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

/// `(uid, gid)` of a local user, from `/etc/passwd`.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() > 3 && fields[0] == user)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// Create `path` (and parents) if it does not exist, giving `path` itself the given mode. An
/// existing directory is left as it is (never chmod a directory we did not create: `/tmp`).
pub(crate) fn make_dir(path: &Path, mode: u32) {
    if path.is_dir() {
        return;
    }
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    set_mode(path, mode);
}

/// chmod, panicking with the path on failure.
pub(crate) fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// When running as root, hand `path` over to `user` (the server drops to that user).
pub(crate) fn give_to(path: &Path, user: &str) {
    if !is_root() {
        return;
    }
    let (uid, gid) =
        user_ids(user).unwrap_or_else(|| panic!("there is no `{user}` user on this machine; {INSTALL_HINT}"));
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("cannot chown {} to {user}: {e}", path.display()));
}

/// A command for `program` that runs as `user` when we are root (servers refuse to run as
/// root), and as ourselves otherwise.
pub(crate) fn command_as(user: &str, program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", user, "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Run a command to completion with stdin closed, panicking if it cannot be started.
pub(crate) fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run a command with `input` on its stdin, capturing stdout and stderr.
pub(crate) fn output_with_input(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // Write from another thread: a client that answers while we still write would otherwise
    // deadlock on a full pipe. A client that exits early (an error) closes its stdin: ignore.
    let input = input.to_owned();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("cannot wait for {cmd:?}: {e}"));
    let _ = writer.join();
    out
}

/// stdout and stderr of a finished command, for panic messages.
pub(crate) fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// A loopback port that was free a moment ago (bind to port 0, read it, release it).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
pub(crate) fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// `(state, ppid)` of a process from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a live (not zombie, not dead) process.
pub(crate) fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Whether `pid` is a live server process working in `data_dir`. Both postgres and mariadbd
/// chdir into their data directory, so this tells our server apart from a process that got
/// its pid later.
pub(crate) fn server_alive(pid: u32, data_dir: &Path) -> bool {
    if !alive(pid) {
        return false;
    }
    let Ok(cwd) = fs::read_link(format!("/proc/{pid}/cwd")) else {
        return false;
    };
    let data_dir = data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_owned());
    cwd == data_dir
}

/// The first line of a pid file (`postmaster.pid`, `mysqld.pid`, our own `pid`).
pub(crate) fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.lines().next()?.trim().parse().ok()
}

/// `pid` followed by all its descendants.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((_, ppid)) = stat(p) {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        if let Some(kids) = children.get(&tree[i]) {
            tree.extend(kids);
        }
        i += 1;
    }
    tree
}

/// Send `signal` (a `kill(1)` name such as `TERM`, `KILL`) to the processes; errors (a process
/// already gone) are ignored.
pub(crate) fn signal(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Wait until none of `pids` is alive; false on timeout.
pub(crate) fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pids.iter().any(|&p| alive(p)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL `pid` and every process below it (a postmaster and its backends: killing only the
/// postmaster would leave backends holding its shared memory), then wait until all are gone.
pub(crate) fn kill_tree(pid: u32) {
    let tree = process_tree(pid);
    // The parent first, so it cannot restart the children we kill next.
    signal(&tree, "KILL");
    if !wait_gone(&tree, Duration::from_secs(30)) {
        panic!("processes {tree:?} survived SIGKILL for 30 s");
    }
}

/// SIGKILL every live server named by one of `pid_files` (relative to `dir`) whose working
/// directory is `dir/data`. Used before wiping or removing a server directory.
pub(crate) fn kill_servers_in(dir: &Path, pid_files: &[&str]) {
    let data = dir.join("data");
    for file in pid_files {
        if let Some(pid) = read_pid(&dir.join(file))
            && server_alive(pid, &data)
        {
            kill_tree(pid);
        }
    }
}

/// The last `lines` lines of a text file written since byte `from` (for panic messages).
pub(crate) fn log_tail_from(path: &Path, from: u64, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(from));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    format!("--- {} (last {lines} lines) ---\n{tail}", path.display())
}

/// The last `lines` lines of a text file.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    log_tail_from(path, 0, lines)
}

/// Current length of a file (0 when missing): where the next start's log lines begin.
pub(crate) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The first of `names` found on `PATH` or in `extra_dirs`.
pub(crate) fn find_program(names: &[&str], extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).chain(extra_dirs.iter().map(PathBuf::from)).collect();
    names.iter().find_map(|name| {
        dirs.iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file() && p.metadata().is_ok_and(|m| m.permissions().mode() & 0o111 != 0))
    })
}

/// A name unique across processes and time: `{prefix}_{pid}_{counter}_{random}` (lower-case
/// hex, so it is a valid unquoted SQL identifier when `prefix` is).
pub(crate) fn unique_name(prefix: &str, sep: char) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default());
    h.write_u64(n);
    let random = h.finish() as u32;
    format!("{prefix}{sep}{}{sep}{n}{sep}{random:08x}", std::process::id())
}

/// Write a small file, panicking with the path on failure.
pub(crate) fn write_file(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
