//! Webhook alerts: [`post_json`] sends a JSON document (a `verify` summary) to a URL
//! the operator put in the job file.
//!
//! `http://` URLs go through a small HTTP/1.1 client over a TCP connection. There is
//! no TLS in the workspace, so `https://` URLs are handed to `curl` as a child process.
//! The URL is never on curl's command line (where `ps` would show it to every user):
//! it travels in a `url = "..."` config line on curl's stdin, and the document in a
//! temporary file readable only by its owner, removed when curl is done.
//!
//! Webhook URLs carry their secret in the path or query (Slack, Discord, ...), so no
//! message or log shows more of a URL than [`shown`] gives (`scheme://host[:port]`),
//! and text that comes from the server or from curl is scrubbed of the URL's path and
//! query pieces before it is shown.
//!
//! Delivery is at least once: an attempt that failed to connect, timed out or got a
//! 5xx answer is retried once after 1 s, so a server that acted on the first request
//! but answered late or badly may receive the document twice. 4xx answers are not
//! retried (the URL or its token is wrong). Redirects are not followed.

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pontoon_core::{Error, ErrorKind, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

/// The pause before the one retry.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// At most this much of a failed answer's body appears in the error.
const SHOWN_BODY_BYTES: usize = 200;
/// An answer whose status line and headers are longer than this is refused.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// At most this much of a failed answer's body is read (it is scrubbed, then cut to
/// [`SHOWN_BODY_BYTES`]).
const MAX_ERROR_BODY_BYTES: usize = 8 * 1024;
/// How long curl may overrun its own `--max-time` before it is killed.
const CURL_GRACE: Duration = Duration::from_secs(2);
const USER_AGENT: &str = concat!("pontoon/", env!("CARGO_PKG_VERSION"));

/// Posts `body` (a JSON document) to `url`; Ok when the server answered 2xx.
///
/// `timeout` bounds one attempt: connect, send and the answer's status line and
/// headers. With the one retry (after a connection error, a timeout or a 5xx answer)
/// the call takes at most about `2 × timeout + 1 s`. `https://` needs `curl` on PATH.
///
/// Errors name the webhook as `scheme://host[:port]` only. Kinds: `Config` for a URL
/// pontoon cannot use, a 3xx or 4xx answer, or a missing curl; `Connect` when the
/// server cannot be reached; `Transient` for a timeout or a 5xx answer; `Unsupported`
/// for an answer that is not HTTP.
pub async fn post_json(url: &str, body: &serde_json::Value, timeout: Duration) -> Result<()> {
    let via = match Target::parse(url)?.scheme {
        Scheme::Http => Via::Tcp,
        Scheme::Https => Via::Curl("curl"),
    };
    post_via(url, body, timeout, via).await
}

/// The part of a webhook URL that may appear in a message: `scheme://host[:port]`,
/// without user info, path, query or fragment (where webhook tokens live).
pub fn shown(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<URL without scheme>".to_string();
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    printable(&format!("{}://{host_port}", scheme.to_ascii_lowercase()))
}

/// How an attempt reaches the server.
#[derive(Debug, Clone, Copy)]
enum Via<'a> {
    Tcp,
    /// Runs this program as curl (tests name others).
    Curl(&'a str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// A webhook URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    scheme: Scheme,
    /// A name or an address; an IPv6 address without its brackets.
    host: String,
    port: u16,
    /// Path and query, at least `/`; the fragment is dropped.
    request_target: String,
    /// Pieces of the URL that may be secret (user info, path and query parts), longest
    /// first: scrubbed from any text the server or curl sends back.
    secrets: Vec<String>,
}

impl Target {
    fn parse(url: &str) -> Result<Target> {
        let bad = |what: &str| Error::config(format!("webhook {}: {what}", shown(url)));
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(Error::config("webhook URL without scheme: expected http://host/path or https://host/path"));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(bad("unsupported scheme (use http:// or https://)")),
        };
        if url.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Err(bad("the URL contains spaces, control or non-ASCII characters (percent-encode them)"));
        }
        if url.contains(['"', '\\']) {
            return Err(bad("the URL contains a quote or a backslash (percent-encode them)"));
        }
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let tail = &tail[..tail.find('#').unwrap_or(tail.len())];
        let request_target = if tail.starts_with('/') { tail.to_string() } else { format!("/{tail}") };
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if userinfo.is_some() && scheme == Scheme::Http {
            return Err(bad(
                "credentials in an http:// webhook URL are not supported (they would travel in clear text)",
            ));
        }
        let (host, port) = if let Some(inner) = host_port.strip_prefix('[') {
            let Some((addr, after)) = inner.split_once(']') else {
                return Err(bad("unclosed [ in the host"));
            };
            if addr.parse::<Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address between [ ]"));
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("unexpected text after ]"))?),
            };
            (addr, port)
        } else {
            match host_port.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if !host.contains(':') && !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
            return Err(bad("the host name may hold only letters, digits, '-', '.' and '_' (IPv6 needs [ ])"));
        }
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let port = match port {
            None | Some("") => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(bad("invalid port")),
            },
        };
        let secrets = secret_pieces(userinfo, &request_target);
        Ok(Target { scheme, host: host.to_string(), port, request_target, secrets })
    }

    fn default_port(&self) -> u16 {
        match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `host[:port]` as the `Host` header and [`shown`] write it.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == self.default_port() { host } else { format!("{host}:{}", self.port) }
    }

    fn shown(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}", self.authority())
    }

    fn request(&self, body: &[u8]) -> Vec<u8> {
        let mut request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\n\r\n",
            self.request_target,
            self.authority(),
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    }

    /// Server or curl text made safe to show: printable, without the URL's secrets,
    /// at most `max` bytes.
    fn safe_text(&self, raw: &[u8], max: usize) -> String {
        let mut text = printable(&String::from_utf8_lossy(raw));
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "***");
        }
        if text.len() > max {
            let mut cut = max;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        text
    }
}

/// The parts of a URL's user info, path and query that could be a token, with their
/// percent-decoded forms, longest first. Pieces shorter than 4 characters are left out
/// (they are words like `api`, not tokens, and would garble messages).
fn secret_pieces(userinfo: Option<&str>, request_target: &str) -> Vec<String> {
    let mut pieces: Vec<String> = Vec::new();
    if request_target != "/" {
        pieces.push(request_target.to_string());
        if let Some((path, query)) = request_target.split_once('?') {
            pieces.extend([path.to_string(), query.to_string()]);
        }
    }
    pieces.extend(request_target.split(['/', '?', '&', '=', ';', ',', '+']).map(str::to_string));
    if let Some(u) = userinfo {
        pieces.push(u.to_string());
        pieces.extend(u.split(':').map(str::to_string));
    }
    let decoded: Vec<String> = pieces.iter().filter_map(|p| percent_decoded(p)).collect();
    pieces.extend(decoded);
    pieces.retain(|p| p.len() >= 4);
    pieces.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    pieces.dedup();
    pieces
}

/// `Some` when `s` has percent escapes that decode to UTF-8 text.
fn percent_decoded(s: &str) -> Option<String> {
    if !s.contains('%') {
        return None;
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Control characters become spaces, runs of white space one space.
fn printable(s: &str) -> String {
    let spaced: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A failed attempt, and whether it is worth the one retry.
#[derive(Debug)]
struct Failure {
    error: Error,
    retry: bool,
}

impl Failure {
    fn retry(error: Error) -> Failure {
        Failure { error, retry: true }
    }

    fn stop(error: Error) -> Failure {
        Failure { error, retry: false }
    }
}

async fn post_via(url: &str, body: &serde_json::Value, timeout: Duration, via: Via<'_>) -> Result<()> {
    let target = Target::parse(url)?;
    let body = serde_json::to_vec(body).map_err(|e| {
        Error::internal(format!("webhook {}: cannot encode the document", target.shown())).with_source(e)
    })?;
    let mut retried = false;
    loop {
        let attempt = match via {
            Via::Tcp => http_attempt(&target, &body, timeout).await,
            Via::Curl(program) => curl_attempt(program, url, &target, &body, timeout).await,
        };
        match attempt {
            Ok(()) => {
                tracing::debug!(webhook = %target.shown(), "webhook delivered");
                return Ok(());
            }
            Err(failure) if failure.retry && !retried => {
                tracing::warn!(webhook = %target.shown(), error = %failure.error, "webhook failed, retrying in 1 s");
                retried = true;
                tokio::time::sleep(RETRY_DELAY).await;
            }
            Err(failure) => return Err(failure.error),
        }
    }
}

fn timed_out(target: &Target, timeout: Duration) -> Failure {
    Failure::retry(Error::new(
        ErrorKind::Transient,
        format!("webhook {}: no answer within {} ms", target.shown(), timeout.as_millis()),
    ))
}

fn connection_failed(target: &Target, what: &str, e: std::io::Error) -> Failure {
    Failure::retry(Error::new(ErrorKind::Connect, format!("webhook {}: {what}", target.shown())).with_source(e))
}

/// The error for a non-2xx status; `reason` and `body` come from the server.
fn answered(target: &Target, code: u16, reason: &[u8], body: &[u8]) -> Failure {
    let reason = target.safe_text(reason, 100);
    let body = target.safe_text(body, SHOWN_BODY_BYTES);
    let mut message = format!("webhook {}: the server answered {code}", target.shown());
    if !reason.is_empty() {
        message = format!("{message} {reason}");
    }
    if !body.is_empty() {
        message = format!("{message}: {body}");
    }
    match code {
        300..=399 => {
            message.push_str(" (redirects are not followed: put the final address in the job file)");
            Failure::stop(Error::new(ErrorKind::Config, message))
        }
        400..=499 => Failure::stop(Error::new(ErrorKind::Config, message)),
        500..=599 => Failure::retry(Error::new(ErrorKind::Transient, message)),
        _ => Failure::stop(Error::new(ErrorKind::Unsupported, message)),
    }
}

/// One POST over plain HTTP/1.1.
async fn http_attempt(target: &Target, body: &[u8], timeout: Duration) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    let mut stream = match timeout_at(deadline, TcpStream::connect((target.host.as_str(), target.port))).await {
        Err(_) => return Err(timed_out(target, timeout)),
        Ok(Err(e)) => return Err(connection_failed(target, "cannot connect", e)),
        Ok(Ok(stream)) => stream,
    };
    match timeout_at(deadline, stream.write_all(&target.request(body))).await {
        Err(_) => return Err(timed_out(target, timeout)),
        Ok(Err(e)) => return Err(connection_failed(target, "sending the request failed", e)),
        Ok(Ok(())) => {}
    }
    let mut buf = Vec::new();
    let head = loop {
        let head = read_head(&mut stream, &mut buf, target, timeout, deadline).await?;
        // Interim answers (100 Continue, 103 Early Hints) precede the real one.
        if (100..200).contains(&head.code) && head.code != 101 {
            buf.drain(..head.len);
            continue;
        }
        break head;
    };
    if (200..300).contains(&head.code) {
        return Ok(());
    }
    let body = read_error_body(&mut stream, &buf[head.len..], &head, deadline).await;
    Err(answered(target, head.code, &head.reason, &body))
}

/// The status line and the headers of an answer.
#[derive(Debug)]
struct Head {
    code: u16,
    reason: Vec<u8>,
    content_length: Option<usize>,
    chunked: bool,
    /// Bytes of `buf` the head takes, with the blank line.
    len: usize,
}

/// Reads until `buf` holds a complete head and parses it.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    target: &Target,
    timeout: Duration,
    deadline: Instant,
) -> Result<Head, Failure> {
    loop {
        if let Some(len) = head_end(buf) {
            return parse_head(&buf[..len], len).ok_or_else(|| {
                Failure::stop(Error::new(
                    ErrorKind::Unsupported,
                    format!("webhook {}: the server's answer is not HTTP", target.shown()),
                ))
            });
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(Failure::stop(Error::new(
                ErrorKind::Unsupported,
                format!("webhook {}: the answer's headers are longer than {MAX_HEAD_BYTES} bytes", target.shown()),
            )));
        }
        let mut chunk = [0u8; 4096];
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(timed_out(target, timeout)),
            Ok(Err(e)) => return Err(connection_failed(target, "reading the answer failed", e)),
            Ok(Ok(0)) => {
                let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
                return Err(connection_failed(target, "the server closed the connection without a complete answer", e));
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The length of the head at the start of `buf` (through the blank line), if complete.
/// Bare `\n` line ends are accepted.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.iter().enumerate().filter(|&(_, &b)| b == b'\n').find_map(|(i, _)| match &buf[i + 1..] {
        [b'\n', ..] => Some(i + 2),
        [b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

fn parse_head(head: &[u8], len: usize) -> Option<Head> {
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = lines.next()?;
    let rest = status.strip_prefix(b"HTTP/")?;
    let mut parts = rest.splitn(3, |&b| b == b' ');
    let _version = parts.next()?;
    let code = parts.next()?;
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code: u16 = std::str::from_utf8(code).ok()?.parse().ok()?;
    let reason = parts.next().unwrap_or_default().to_vec();
    let (mut content_length, mut chunked) = (None, false);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_ascii_lowercase();
        let value = String::from_utf8_lossy(&line[colon + 1..]).trim().to_ascii_lowercase();
        match name.as_str() {
            "content-length" => content_length = value.parse().ok(),
            "transfer-encoding" => chunked = value.split(',').any(|v| v.trim() == "chunked"),
            _ => {}
        }
    }
    Some(Head { code, reason, content_length, chunked, len })
}

/// Reads the start of a failed answer's body: as much as arrives before the deadline,
/// the end of the body or [`MAX_ERROR_BODY_BYTES`]. The status is known already, so a
/// slow or broken body only shortens what is shown.
async fn read_error_body(stream: &mut TcpStream, arrived: &[u8], head: &Head, deadline: Instant) -> Vec<u8> {
    let mut raw = arrived.to_vec();
    let limit = head.content_length.unwrap_or(usize::MAX).min(MAX_ERROR_BODY_BYTES);
    let mut chunk = [0u8; 4096];
    while raw.len() < limit && !(head.chunked && raw.ends_with(b"0\r\n\r\n")) {
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => raw.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    raw.truncate(limit);
    if head.chunked { dechunk(&raw) } else { raw }
}

/// Decodes a chunked body as far as it is complete.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = raw.iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&raw[..nl]);
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else { break };
        raw = &raw[nl + 1..];
        if size == 0 {
            break;
        }
        let take = size.min(raw.len());
        out.extend_from_slice(&raw[..take]);
        raw = &raw[take..];
        if take < size {
            break;
        }
        raw = raw.strip_prefix(b"\r\n").or_else(|| raw.strip_prefix(b"\n")).unwrap_or(raw);
    }
    out
}

/// One POST through curl: the URL in a config line on stdin, the document in a
/// temporary file, the status code written by `--write-out` after the body on stdout.
async fn curl_attempt(
    program: &str,
    url: &str,
    target: &Target,
    body: &[u8],
    timeout: Duration,
) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    let file = BodyFile::create(body).await.map_err(|e| {
        Failure::stop(
            Error::new(
                ErrorKind::Internal,
                format!("webhook {}: cannot write the document to a temporary file", target.shown()),
            )
            .with_source(e),
        )
    })?;
    let mut data_arg = std::ffi::OsString::from("@");
    data_arg.push(&file.0);
    let mut command = tokio::process::Command::new(program);
    command
        .arg("-q") // first, or it is ignored: do not read ~/.curlrc
        .args(["--silent", "--show-error", "--proto", "=http,https", "--request", "POST"])
        .args(["--header", "Content-Type: application/json", "--header", "Expect:", "--user-agent", USER_AGENT])
        .args(["--max-time", &format!("{:.3}", timeout.as_secs_f64().max(0.001))])
        .args(["--write-out", "\n%{http_code}", "--config", "-", "--data-binary"])
        .arg(data_arg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::stop(Error::config(format!(
                "webhook {}: https webhooks need curl on PATH (or use an http:// URL)",
                target.shown()
            ))));
        }
        Err(e) => {
            return Err(Failure::stop(
                Error::new(ErrorKind::Internal, format!("webhook {}: cannot start curl", target.shown()))
                    .with_source(e),
            ));
        }
    };
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let config = format!("url = \"{url}\"\n"); // `Target::parse` refused quotes and backslashes
    let exchange = async {
        let write = async {
            if let Some(mut stdin) = stdin {
                // A failed write shows as curl's own error.
                let _ = stdin.write_all(config.as_bytes()).await;
            }
        };
        let (_, out, err) = tokio::join!(write, read_capped(stdout), read_capped(stderr));
        (child.wait().await, out, err)
    };
    let result = timeout_at(deadline + CURL_GRACE, exchange).await;
    drop(file);
    let Ok((status, (out, out_tail), (err, _))) = result else {
        let _ = child.kill().await;
        return Err(timed_out(target, timeout));
    };
    let status = status.map_err(|e| {
        Failure::stop(
            Error::new(ErrorKind::Internal, format!("webhook {}: curl failed", target.shown())).with_source(e),
        )
    })?;
    match status.code() {
        Some(0) => {
            let whole = if out_tail.is_empty() { out.clone() } else { out_tail };
            let code = whole.rsplit(|&b| b == b'\n').next().and_then(|c| std::str::from_utf8(c).ok()?.parse().ok());
            let Some(code) = code else {
                return Err(Failure::stop(Error::new(
                    ErrorKind::Internal,
                    format!("webhook {}: curl did not report a status code", target.shown()),
                )));
            };
            if (200..300).contains(&code) {
                return Ok(());
            }
            let body_end = out.iter().rposition(|&b| b == b'\n').unwrap_or(out.len());
            Err(answered(target, code, b"", &out[..body_end]))
        }
        Some(exit) => {
            let detail = target.safe_text(&err, 300);
            let detail = detail.strip_prefix("curl: ").unwrap_or(&detail);
            let message = format!("webhook {}: curl failed (exit {exit}): {detail}", target.shown());
            Err(match exit {
                28 => Failure::retry(Error::new(
                    ErrorKind::Transient,
                    format!("webhook {}: no answer within {} ms ({detail})", target.shown(), timeout.as_millis()),
                )),
                // Could not resolve, could not connect, empty reply, send or receive failed.
                6 | 7 | 52 | 55 | 56 => Failure::retry(Error::new(ErrorKind::Connect, message)),
                // Unsupported protocol, malformed URL, unknown option (a curl too old).
                1..=3 => Failure::stop(Error::new(ErrorKind::Config, message)),
                _ => Failure::stop(Error::new(ErrorKind::Connect, message)),
            })
        }
        None => Err(Failure::stop(Error::new(
            ErrorKind::Internal,
            format!("webhook {}: curl was killed by a signal", target.shown()),
        ))),
    }
}

/// Reads a pipe to its end, keeping the first [`MAX_ERROR_BODY_BYTES`] bytes and,
/// when there were more, the last 16 (where `--write-out` put the status code).
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>) -> (Vec<u8>, Vec<u8>) {
    let (mut head, mut tail) = (Vec::new(), Vec::new());
    let Some(mut pipe) = pipe else { return (head, tail) };
    let mut chunk = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut chunk).await
        && n > 0
    {
        let keep = (MAX_ERROR_BODY_BYTES - head.len()).min(n);
        head.extend_from_slice(&chunk[..keep]);
        if keep < n {
            tail.extend_from_slice(&chunk[..n]);
            let excess = tail.len().saturating_sub(16);
            tail.drain(..excess);
        }
    }
    (head, tail)
}

/// The document for curl, in a new file readable only by its owner; removed on drop.
#[derive(Debug)]
struct BodyFile(PathBuf);

impl BodyFile {
    async fn create(body: &[u8]) -> std::io::Result<BodyFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("pontoon-webhook-{}-{nanos}-{n}.json", std::process::id()));
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create_new(true); // never follows a planted file or link
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options.open(&path).await?;
        let file_guard = BodyFile(path);
        file.write_all(body).await?;
        file.flush().await?;
        Ok(file_guard)
    }
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};
    use std::time::Instant as StdInstant;

    use serde_json::json;
    use tokio::net::TcpListener;

    use super::*;

    /// A request as the test webhook received it.
    #[derive(Debug, Clone)]
    struct Received {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Received {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    #[derive(Debug, Clone)]
    enum Answer {
        /// Status line text and body; `{target}` in the body becomes the request target.
        Status(&'static str, String),
        /// Sent as is.
        Raw(&'static str),
        /// Reads the request, never answers.
        Silent,
    }

    fn status(line: &'static str, body: &str) -> Answer {
        Answer::Status(line, body.to_string())
    }

    /// A webhook on a local port: the n-th connection gets `answers[n]` (the last one
    /// repeats).
    #[derive(Debug)]
    struct Hook {
        addr: SocketAddr,
        received: Arc<Mutex<Vec<Received>>>,
        connections: Arc<AtomicUsize>,
    }

    impl Hook {
        async fn start(answers: Vec<Answer>) -> Hook {
            Hook::start_on("127.0.0.1:0", answers).await.expect("bind 127.0.0.1")
        }

        async fn start_on(bind: &str, answers: Vec<Answer>) -> std::io::Result<Hook> {
            let listener = TcpListener::bind(bind).await?;
            let addr = listener.local_addr()?;
            let received = Arc::new(Mutex::new(Vec::new()));
            let connections = Arc::new(AtomicUsize::new(0));
            let (rec, conns) = (received.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let n = conns.fetch_add(1, Ordering::SeqCst);
                    let answer = answers[n.min(answers.len() - 1)].clone();
                    let rec = rec.clone();
                    tokio::spawn(async move {
                        let Some(request) = read_request(&mut socket).await else { return };
                        let target = request.target.clone();
                        rec.lock().unwrap().push(request);
                        let text = match answer {
                            Answer::Status(line, body) => {
                                let body = body.replace("{target}", &target);
                                format!(
                                    "HTTP/1.1 {line}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                                     Connection: close\r\n\r\n{body}",
                                    body.len()
                                )
                            }
                            Answer::Raw(raw) => raw.to_string(),
                            Answer::Silent => {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                                return;
                            }
                        };
                        let _ = socket.write_all(text.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    });
                }
            });
            Ok(Hook { addr, received, connections })
        }

        fn url(&self, path_and_query: &str) -> String {
            format!("http://{}{path_and_query}", self.addr)
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }

        fn received(&self) -> Vec<Received> {
            self.received.lock().unwrap().clone()
        }
    }

    async fn read_request(socket: &mut TcpStream) -> Option<Received> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_len = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = socket.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_len - 4].to_vec()).ok()?;
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next()?.split(' ');
        let (method, target) = (request_line.next()?.to_string(), request_line.next()?.to_string());
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_len..].to_vec();
        while body.len() < length {
            let n = socket.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Some(Received { method, target, headers, body })
    }

    /// A local port nothing listens on.
    async fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    }

    fn curl_available() -> bool {
        let found = std::process::Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("note: curl is not on PATH; skipping the curl test");
        }
        found
    }

    fn summary() -> serde_json::Value {
        json!({
            "job": "shop",
            "differences": [{"table": "orders", "missing": 3, "extra": 0, "changed": 1}],
            "note": "naïve \"quotes\" \\ back\nslash — ✓",
        })
    }

    const SECRET_PATH: &str = "/services/T0SECRET1/B0SECRET2/tok3nSECRET3?auth=QSECRET4Q&x=1";

    fn assert_no_secret(message: &str) {
        for piece in ["SECRET", "services", "auth=", "/services"] {
            assert!(!message.contains(piece), "{piece:?} leaked into: {message}");
        }
    }

    // --- the URL ---

    #[test]
    fn url_with_ipv6_host_port_and_query() {
        let t = Target::parse("http://[::1]:8080/hook/a?token=x&b=2#frag").unwrap();
        assert_eq!((t.scheme, t.host.as_str(), t.port), (Scheme::Http, "::1", 8080));
        assert_eq!(t.request_target, "/hook/a?token=x&b=2");
        assert_eq!(t.authority(), "[::1]:8080");
        assert_eq!(t.shown(), "http://[::1]:8080");
    }

    #[test]
    fn url_default_ports_and_missing_path() {
        let t = Target::parse("http://example.com").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.request_target.as_str()), ("example.com", 80, "/"));
        assert_eq!(t.authority(), "example.com");
        let t = Target::parse("HTTPS://Hooks.Example.com?k=v").unwrap();
        assert_eq!((t.scheme, t.port, t.request_target.as_str()), (Scheme::Https, 443, "/?k=v"));
        let t = Target::parse("http://h:/p").unwrap();
        assert_eq!((t.port, t.request_target.as_str()), (80, "/p"));
        let t = Target::parse("http://[::1]/").unwrap();
        assert_eq!((t.port, t.authority().as_str()), (80, "[::1]"));
    }

    #[test]
    fn bad_urls_are_config_errors_without_their_path() {
        for url in [
            "ftp://h/SECRETpath",
            "hooks.example.com/SECRETpath",
            "http:///SECRETpath",
            "http://h:99999/SECRETpath",
            "http://h:0/SECRETpath",
            "http://h:8a/SECRETpath",
            "http://::1/SECRETpath",
            "http://[::zz]/SECRETpath",
            "http://[::1/SECRETpath",
            "http://user:pw@h/SECRETpath",
            "http://h/SECRET path",
            "http://h/SECRET\"path",
            "http://h/SECRETpäth",
        ] {
            let e = Target::parse(url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{url}");
            assert!(!e.to_string().contains("SECRET"), "{url}: {e}");
            assert!(!e.to_string().contains("pw"), "{url}: {e}");
        }
        assert!(Target::parse("https://user:pw@h/x").is_ok(), "curl handles https credentials");
    }

    #[test]
    fn shown_keeps_only_scheme_host_and_port() {
        assert_eq!(shown("https://hooks.slack.com/services/T0/B0/XYZ"), "https://hooks.slack.com");
        assert_eq!(shown("http://u:pw@127.0.0.1:9999/a?token=t"), "http://127.0.0.1:9999");
        assert_eq!(shown("http://h?token=a@b"), "http://h");
        assert_eq!(shown("HTTP://[::1]:80#x"), "http://[::1]:80");
        assert_eq!(shown("h/secret"), "<URL without scheme>");
    }

    #[test]
    fn secrets_are_scrubbed_from_server_text() {
        let t = Target::parse("http://h/services/T0/B0/tok%2Den?k=abcd1234").unwrap();
        let text = t.safe_text(b"unknown hook /services/T0/B0/tok-en (k abcd1234)\r\n\x07", 200);
        assert_eq!(text, "unknown hook *** (k ***)");
        let long = t.safe_text("é".repeat(150).as_bytes(), 200);
        assert_eq!(long.len(), 200 + '…'.len_utf8(), "cut on a char boundary");
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(dechunk(b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"), b"hello world");
        assert_eq!(dechunk(b"5\r\nhel"), b"hel");
        assert_eq!(dechunk(b"not chunked"), b"");
    }

    // --- plain HTTP ---

    #[tokio::test]
    async fn posts_the_document() {
        let hook = Hook::start(vec![status("204 No Content", "")]).await;
        post_json(&hook.url("/hooks/abc?x=1&y=two"), &summary(), Duration::from_secs(5)).await.unwrap();
        let received = hook.received();
        assert_eq!(received.len(), 1);
        let r = &received[0];
        assert_eq!((r.method.as_str(), r.target.as_str()), ("POST", "/hooks/abc?x=1&y=two"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("host"), Some(hook.addr.to_string().as_str()));
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(r.header("user-agent"), Some(USER_AGENT));
        assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()));
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(), summary());
        assert_eq!(hook.connections(), 1);
    }

    #[tokio::test]
    async fn ipv6_literal_host() {
        let Ok(hook) = Hook::start_on("[::1]:0", vec![status("200 OK", "ok")]).await else {
            eprintln!("note: no IPv6 loopback here; skipping");
            return;
        };
        let url = format!("http://[::1]:{}/v6", hook.addr.port());
        post_json(&url, &summary(), Duration::from_secs(5)).await.unwrap();
        let r = &hook.received()[0];
        assert_eq!(r.target, "/v6");
        assert_eq!(r.header("host"), Some(format!("[::1]:{}", hook.addr.port()).as_str()));
    }

    #[tokio::test]
    async fn server_error_shows_status_and_no_token() {
        // The server echoes the path, as some do: the message must still hide it.
        let hook = Hook::start(vec![status("500 Internal Server Error", "no hook at {target}")]).await;
        let e = post_json(&hook.url(SECRET_PATH), &summary(), Duration::from_secs(5)).await.unwrap_err();
        let message = e.to_string();
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert!(
            message.starts_with(&format!(
                "webhook http://{}: the server answered 500 Internal Server Error: no hook at",
                hook.addr
            )),
            "{message}"
        );
        assert_no_secret(&message);
        assert_eq!(hook.connections(), 2, "a 5xx is retried once");
        assert_eq!(hook.received()[0].target, SECRET_PATH, "the token did reach the server");
    }

    #[tokio::test]
    async fn error_body_is_cut_and_made_printable() {
        let body = format!("bad\x01request\r\n\r\n{}", "y".repeat(1000));
        let hook = Hook::start(vec![status("400 Bad Request", &body)]).await;
        let e = post_json(&hook.url("/h"), &summary(), Duration::from_secs(5)).await.unwrap_err();
        let message = e.to_string();
        let (_, shown_body) = message.split_once("400 Bad Request: ").unwrap();
        assert!(shown_body.starts_with("bad request yyy"), "{message}");
        assert!(shown_body.len() <= SHOWN_BODY_BYTES + '…'.len_utf8(), "{} bytes: {message}", shown_body.len());
        assert!(!message.chars().any(char::is_control), "{message:?}");
    }

    #[tokio::test]
    async fn chunked_error_body_and_interim_answers() {
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\n\r\n\
                   5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let hook = Hook::start(vec![Answer::Raw(raw), status("202 Accepted", "")]).await;
        let e =
            http_attempt(&Target::parse(&hook.url("/h")).unwrap(), b"{}", Duration::from_secs(5)).await.unwrap_err();
        assert!(e.retry);
        assert!(e.error.to_string().ends_with("the server answered 502 Bad Gateway: hello world"), "{}", e.error);
        let ok = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let hook = Hook::start(vec![Answer::Raw(ok)]).await;
        post_json(&hook.url("/h"), &summary(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(hook.connections(), 1);
    }

    #[tokio::test]
    async fn client_error_is_not_retried() {
        let hook = Hook::start(vec![status("404 Not Found", "no such hook"), status("200 OK", "")]).await;
        let started = StdInstant::now();
        let e = post_json(&hook.url("/h/x"), &summary(), Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("answered 404 Not Found: no such hook"), "{e}");
        assert_eq!(hook.connections(), 1);
        assert!(started.elapsed() < RETRY_DELAY, "no retry pause: {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn redirect_is_not_followed() {
        let raw = "HTTP/1.1 301 Moved Permanently\r\nLocation: http://elsewhere/x\r\nContent-Length: 0\r\n\r\n";
        let hook = Hook::start(vec![Answer::Raw(raw)]).await;
        let e = post_json(&hook.url("/h"), &summary(), Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("answered 301 Moved Permanently (redirects are not followed"), "{e}");
        assert_eq!(hook.connections(), 1);
    }

    #[tokio::test]
    async fn unavailable_then_ok_succeeds_after_one_retry() {
        let hook = Hook::start(vec![status("503 Service Unavailable", "busy"), status("200 OK", "ok")]).await;
        let started = StdInstant::now();
        post_json(&hook.url("/h"), &summary(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(hook.connections(), 2);
        assert!(started.elapsed() >= RETRY_DELAY, "waited {:?}", started.elapsed());
        let received = hook.received();
        assert_eq!(received[0].body, received[1].body);
    }

    #[tokio::test]
    async fn closed_port_is_a_connect_error() {
        let port = closed_port().await;
        let started = StdInstant::now();
        let url = format!("http://127.0.0.1:{port}{SECRET_PATH}");
        let e = post_json(&url, &summary(), Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect);
        assert!(e.to_string().starts_with(&format!("webhook http://127.0.0.1:{port}: cannot connect: ")), "{e}");
        assert_no_secret(&e.to_string());
        // One refused attempt, the 1 s pause, one more refused attempt.
        assert!(started.elapsed() < Duration::from_millis(2500), "took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let hook = Hook::start(vec![Answer::Silent]).await;
        let started = StdInstant::now();
        let e = post_json(&hook.url("/h"), &summary(), Duration::from_millis(300)).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert!(e.to_string().ends_with("no answer within 300 ms"), "{e}");
        assert_eq!(hook.connections(), 2, "a timeout is retried once");
        // 300 ms, the 1 s pause, 300 ms.
        assert!(took >= Duration::from_millis(1600) && took < Duration::from_millis(3000), "took {took:?}");
    }

    #[tokio::test]
    async fn other_schemes_are_config_errors() {
        let e = post_json("ftp://files.example.com/SECRET", &summary(), Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert_eq!(e.to_string(), "webhook ftp://files.example.com: unsupported scheme (use http:// or https://)");
    }

    // --- https through curl ---

    #[tokio::test]
    async fn missing_curl_is_named() {
        let via = Via::Curl("pontoon-test-no-such-curl");
        let e = post_via("https://127.0.0.1/x", &summary(), Duration::from_secs(1), via).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert_eq!(
            e.to_string(),
            "webhook https://127.0.0.1: https webhooks need curl on PATH (or use an http:// URL)"
        );
    }

    #[tokio::test]
    async fn https_to_closed_port_hides_the_path() {
        if !curl_available() {
            return;
        }
        let port = closed_port().await;
        let url = format!("https://127.0.0.1:{port}{SECRET_PATH}");
        let e = post_json(&url, &summary(), Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
        assert!(e.to_string().starts_with(&format!("webhook https://127.0.0.1:{port}: curl failed (exit 7)")), "{e}");
        assert_no_secret(&e.to_string());
    }

    #[tokio::test]
    async fn curl_posts_the_document() {
        if !curl_available() {
            return;
        }
        // Larger than curl's 100 KiB config line limit: the document goes in a file.
        let big = json!({"rows": (0..20_000).map(|i| format!("k{i}")).collect::<Vec<_>>(), "s": summary()});
        let hook = Hook::start(vec![status("200 OK", "ok")]).await;
        post_via(&hook.url("/hooks/abc?x=1"), &big, Duration::from_secs(10), Via::Curl("curl")).await.unwrap();
        let r = &hook.received()[0];
        assert_eq!((r.method.as_str(), r.target.as_str()), ("POST", "/hooks/abc?x=1"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("user-agent"), Some(USER_AGENT));
        assert_eq!(r.header("expect"), None);
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(), big);
        assert_eq!(hook.connections(), 1);
    }

    #[tokio::test]
    async fn curl_error_answers_show_status_and_no_token() {
        if !curl_available() {
            return;
        }
        let hook = Hook::start(vec![status("500 Internal Server Error", "no hook at {target}")]).await;
        let e = post_via(&hook.url(SECRET_PATH), &summary(), Duration::from_secs(5), Via::Curl("curl")).await;
        let e = e.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert!(
            e.to_string().starts_with(&format!("webhook http://{}: the server answered 500: no hook at", hook.addr))
        );
        assert_no_secret(&e.to_string());
        assert_eq!(hook.connections(), 2, "a 5xx is retried once");

        let hook = Hook::start(vec![status("403 Forbidden", "bad token")]).await;
        let e = post_via(&hook.url("/h"), &summary(), Duration::from_secs(5), Via::Curl("curl")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().ends_with("the server answered 403: bad token"), "{e}");
        assert_eq!(hook.connections(), 1, "a 4xx is not retried");
    }

    /// A stand-in for curl that records its arguments, its stdin and the document file.
    #[cfg(unix)]
    #[tokio::test]
    async fn curl_never_sees_the_url_as_an_argument() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pontoon-alert-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("fake-curl");
        std::fs::write(
            &script,
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$0.args\"\ncat > \"$0.stdin\"\n\
             for a in \"$@\"; do case \"$a\" in @*) cp \"${a#@}\" \"$0.body\";; esac; done\n\
             echo 'curl: (7) Failed to connect' >&2\nexit 7\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        let program = script.to_str().unwrap();
        let url = format!("https://hooks.example.com{SECRET_PATH}");
        // Another test forking while the script was being written can make exec fail
        // with "Text file busy" for a moment.
        let mut e = post_via(&url, &summary(), Duration::from_secs(5), Via::Curl(program)).await.unwrap_err();
        for _ in 0..5 {
            if !e.to_string().contains("busy") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            e = post_via(&url, &summary(), Duration::from_secs(5), Via::Curl(program)).await.unwrap_err();
        }
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
        assert_eq!(e.to_string(), "webhook https://hooks.example.com: curl failed (exit 7): (7) Failed to connect");
        let args = std::fs::read_to_string(dir.join("fake-curl.args")).unwrap();
        assert!(!args.contains("SECRET") && !args.contains("hooks.example.com"), "{args}");
        assert!(args.starts_with("-q\n"), "-q must come first: {args}");
        let stdin = std::fs::read_to_string(dir.join("fake-curl.stdin")).unwrap();
        assert_eq!(stdin, format!("url = \"{url}\"\n"));
        let body = std::fs::read(dir.join("fake-curl.body")).unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap(), summary());
        let file = args.lines().find_map(|a| a.strip_prefix('@')).unwrap();
        assert!(!std::path::Path::new(file).exists(), "the document file is removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
