//! Logical decoding streamed over PostgreSQL's replication protocol, which
//! tokio-postgres does not speak.
//!
//! A [`WalStream`] opens its own connection with `replication=database`, logs in
//! (password, MD5 or SCRAM-SHA-256; no TLS, like every pontoon session), and sends
//! `START_REPLICATION SLOT ... LOGICAL`. From then on the server decodes each
//! transaction once, as it commits, and sends the output plugin's messages
//! (`XLogData`); the client confirms what it has applied with standby status
//! updates, which move the slot. Compared with polling
//! `pg_logical_slot_peek_changes` and `pg_replication_slot_advance` (which decode
//! every change twice and one batch at a time), the server keeps decoding while the
//! syncer applies.
//!
//! A task owns the connection: it cuts the incoming bytes into messages, hands them
//! over in chunks (at most a budget of bytes, [`BUFFERED`] by default, wait for the
//! reader; then the server waits too), answers keepalives, and sends
//! the confirmed position whenever it changes and every [`STATUS_EVERY`], also while
//! the syncer is busy elsewhere (the server ends a silent client after
//! `wal_sender_timeout`). [`WalStream::close`] ends the stream cleanly (the server
//! frees the slot before it returns); dropping it just cuts the connection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use pontoon_core::{Error, ErrorKind, Result};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::Config;
use tokio_postgres::config::Host;

use crate::PG_EPOCH_OFFSET_MICROS;
use crate::errors::kind_of_sqlstate;

/// How many bytes of messages may wait for the reader: a syncer's batch (50,000
/// changes of a narrow table are about 15 MB of wal2json) is decoded while the
/// previous one is applied.
pub const BUFFERED: usize = 48 << 20;
/// The unit of the buffer's budget.
const BUDGET_UNIT: usize = 1024;
/// How much one socket read asks for (a chunk holds the messages it completes).
const READ_SIZE: usize = 256 * 1024;
/// How often the confirmed position is sent when nothing else happens (the server
/// asks for it at half its `wal_sender_timeout`, but a stream whose reader is busy
/// reads no requests).
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How long [`WalStream::close`] waits for the server to end the stream.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How long connecting and logging in may take when the URL sets no `connect_timeout`.
const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// Messages handed over together, with the share of the buffer they hold.
struct Chunk {
    messages: Vec<Bytes>,
    /// The server's position from a keepalive among (or after) the messages: every
    /// transaction committed before it has been sent by the end of the chunk.
    sent: Option<u64>,
    held: OwnedSemaphorePermit,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A running logical replication stream (see the module docs).
pub(crate) struct WalStream {
    chunks: mpsc::UnboundedReceiver<Result<Chunk>>,
    current: VecDeque<Bytes>,
    /// The budget the current chunk holds, given back once it is read.
    held: Option<OwnedSemaphorePermit>,
    /// The server's position once the current chunk is read.
    sent_after: Option<u64>,
    /// How far the server has decoded: everything committed before it was read.
    sent: u64,
    /// Asks the server for its position.
    probe: Arc<Notify>,
    confirmed: watch::Sender<u64>,
    close: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for WalStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalStream").field("confirmed", &*self.confirmed.borrow()).finish()
    }
}

impl Drop for WalStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Session settings of the stream: the output plugin prints values with them.
pub(crate) const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

impl WalStream {
    /// Connects to the server of `config` (`redacted`: its URL without the password,
    /// for messages) and starts streaming `slot` from `from` (an LSN; the server
    /// starts at the slot's confirmed position when that is later) with the output
    /// plugin's `options`. Nothing is confirmed until [`WalStream::confirm`] (a stream
    /// may start ahead of what is applied: the syncer reads ahead). At most `buffered`
    /// bytes of messages wait for [`WalStream::next`].
    pub(crate) async fn start(
        config: &Config,
        redacted: &str,
        slot: &str,
        from: u64,
        options: &[(&str, &str)],
        buffered: usize,
    ) -> Result<WalStream> {
        let mut conn = Conn::open(config, redacted).await?;
        let what = format!("starting to stream replication slot {slot}");
        let options: Vec<String> = options
            .iter()
            .map(|(k, v)| format!("\"{}\" '{}'", k.replace('"', "\"\""), v.replace('\'', "''")))
            .collect();
        let command = format!(
            "START_REPLICATION SLOT \"{}\" LOGICAL {:X}/{:X} ({})",
            slot.replace('"', "\"\""),
            from >> 32,
            from & 0xffff_ffff,
            options.join(", ")
        );
        frontend::query(&command, &mut conn.out).map_err(|e| io_error(e, &what))?;
        conn.flush(&what).await?;
        loop {
            let (tag, body) = conn.frame(&what).await?;
            match tag {
                // CopyBothResponse: streaming
                b'W' => break,
                b'E' => return Err(server_error(&body, &what)),
                _ => {}
            }
        }
        let (chunks_tx, chunks) = mpsc::unbounded_channel();
        // 0 (InvalidXLogRecPtr) confirms nothing
        let (confirmed, confirmed_rx) = watch::channel(0);
        let (close, close_rx) = oneshot::channel();
        let probe = Arc::new(Notify::new());
        let probed = probe.clone();
        let slot = slot.to_string();
        let task = tokio::spawn(async move {
            let what = format!("streaming replication slot {slot}");
            let ends = Ends { confirmed: confirmed_rx, close: close_rx, probe: probed };
            if let Err(e) = pump(&mut conn, &chunks_tx, buffered, ends, &what).await {
                let _ = chunks_tx.send(Err(e));
            }
        });
        Ok(WalStream {
            chunks,
            current: VecDeque::new(),
            held: None,
            sent_after: None,
            sent: 0,
            probe,
            confirmed,
            close: Some(close),
            task,
        })
    }

    /// The next message of the output plugin, or `None` when none came by `until`
    /// (a passed `until` takes only what has arrived already) or when the server
    /// reported its position ([`WalStream::sent`]).
    pub(crate) async fn next(&mut self, until: Instant) -> Result<Option<Bytes>> {
        loop {
            if let Some(message) = self.current.pop_front() {
                return Ok(Some(message));
            }
            if let Some(sent) = self.sent_after.take() {
                self.sent = self.sent.max(sent);
                return Ok(None);
            }
            let received = tokio::time::timeout_at(until.into(), self.chunks.recv()).await;
            match received {
                Err(_) => return Ok(None),
                Ok(None) => return Err(Error::new(ErrorKind::Transient, "the replication stream ended")),
                Ok(Some(chunk)) => {
                    let chunk = chunk?;
                    self.current = chunk.messages.into();
                    self.sent_after = chunk.sent;
                    self.held = Some(chunk.held);
                }
            }
        }
    }

    /// How far the server has decoded the WAL: every transaction that committed
    /// before this position has been returned by [`WalStream::next`] (as of the last
    /// keepalive read; [`WalStream::probe`] asks for one).
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// Asks the server to report its position (it answers with a keepalive).
    pub(crate) fn probe(&self) {
        self.probe.notify_one();
    }

    /// Confirms `lsn` to the server (sent at once, in the background): the slot may
    /// forget what lies before it. An earlier position than one confirmed before is
    /// ignored.
    pub(crate) fn confirm(&self, lsn: u64) {
        self.confirmed.send_if_modified(|c| {
            let later = lsn > *c;
            if later {
                *c = lsn;
            }
            later
        });
    }

    /// Ends the stream cleanly: confirms the last position, ends the copy and waits
    /// (a few seconds at most) for the server to leave replication mode, which frees
    /// the slot for the next stream.
    pub(crate) async fn close(mut self) {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        self.chunks.close();
        let _ = tokio::time::timeout(CLOSE_WAIT + Duration::from_secs(1), &mut self.task).await;
    }
}

/// Opens a replication connection and closes it again: whether the server lets this
/// user stream (pg_hba.conf, a free WAL sender, the REPLICATION attribute).
pub(crate) async fn check_login(config: &Config, redacted: &str) -> Result<()> {
    let mut conn = Conn::open(config, redacted).await?;
    frontend::terminate(&mut conn.out);
    conn.flush("closing the replication connection").await
}

/// What the task hears from its [`WalStream`].
struct Ends {
    confirmed: watch::Receiver<u64>,
    close: oneshot::Receiver<()>,
    probe: Arc<Notify>,
}

/// The task's loop: messages to the reader, status updates to the server.
async fn pump(
    conn: &mut Conn,
    chunks: &mpsc::UnboundedSender<Result<Chunk>>,
    buffered: usize,
    ends: Ends,
    what: &str,
) -> Result<()> {
    let Ends { mut confirmed, mut close, probe } = ends;
    let mut tick = tokio::time::interval(STATUS_EVERY);
    let limit = (buffered / BUDGET_UNIT).max(1);
    let budget = Arc::new(Semaphore::new(limit));
    let mut chunk: Vec<Bytes> = Vec::new();
    let mut sent: Option<u64> = None;
    loop {
        if chunk.is_empty() && sent.is_none() {
            while let Some((tag, body)) = conn.try_frame() {
                match (tag, body.first()) {
                    // XLogData: start, end, send time, then the plugin's message
                    // (copied out: a message holding on to the input buffer would
                    // make every read allocate, and fault in, a fresh one)
                    (b'd', Some(b'w')) if body.len() >= 25 => chunk.push(Bytes::copy_from_slice(&body[25..])),
                    // keepalive: the server's position (the end of the WAL it has
                    // decoded), send time, reply requested
                    (b'd', Some(b'k')) if body.len() >= 18 => {
                        let at = u64::from_be_bytes(body[1..9].try_into().unwrap_or_default());
                        sent = Some(sent.map_or(at, |s| s.max(at)));
                        if body[17] == 1 {
                            let lsn = *confirmed.borrow();
                            conn.status(lsn, false, what).await?;
                        }
                    }
                    (b'E', _) => return Err(server_error(&body, what)),
                    (b'c' | b'C' | b'Z', _) => {
                        return Err(Error::new(ErrorKind::Transient, format!("{what}: the server ended the stream")));
                    }
                    // notices, parameter changes
                    _ => {}
                }
            }
        }
        let pending = !chunk.is_empty() || sent.is_some();
        let bytes: usize = chunk.iter().map(Bytes::len).sum();
        let units = (bytes / BUDGET_UNIT).clamp(1, limit) as u32;
        tokio::select! {
            biased;
            _ = &mut close => {
                let lsn = *confirmed.borrow();
                conn.finish(lsn, what).await;
                return Ok(());
            }
            changed = confirmed.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let lsn = *confirmed.borrow_and_update();
                conn.status(lsn, false, what).await?;
            }
            _ = probe.notified() => {
                let lsn = *confirmed.borrow();
                conn.status(lsn, true, what).await?;
            }
            _ = tick.tick() => {
                let lsn = *confirmed.borrow();
                conn.status(lsn, false, what).await?;
            }
            held = budget.clone().acquire_many_owned(units), if pending => match held {
                Ok(held) => {
                    let messages = std::mem::take(&mut chunk);
                    if chunks.send(Ok(Chunk { messages, sent: sent.take(), held })).is_err() {
                        // the stream was dropped
                        return Ok(());
                    }
                }
                Err(_) => return Err(Error::internal("the replication stream's buffer budget was closed")),
            },
            read = conn.read(), if !pending => {
                if read.map_err(|e| io_error(e, what))? == 0 {
                    return Err(Error::new(ErrorKind::Transient, format!("{what}: the server closed the connection")));
                }
            }
        }
    }
}

/// One replication connection: the socket and its buffers.
struct Conn {
    io: Box<dyn Io>,
    input: BytesMut,
    out: BytesMut,
}

impl Conn {
    /// Connects to the first host of `config` and logs in for logical replication.
    async fn open(config: &Config, redacted: &str) -> Result<Conn> {
        let wait = config.get_connect_timeout().copied().unwrap_or(CONNECT_WAIT);
        tokio::time::timeout(wait, Conn::open_now(config, redacted))
            .await
            .map_err(|_| Error::new(ErrorKind::Connect, format!("cannot connect to {redacted}: timed out")))?
    }

    async fn open_now(config: &Config, redacted: &str) -> Result<Conn> {
        let cannot = |e: std::io::Error| Error::new(ErrorKind::Connect, format!("cannot connect to {redacted}: {e}"));
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let io: Box<dyn Io> = match config.get_hosts().first() {
            Some(Host::Tcp(host)) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(cannot)?;
                stream.set_nodelay(true).map_err(cannot)?;
                Box::new(stream)
            }
            #[cfg(unix)]
            Some(Host::Unix(dir)) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                Box::new(tokio::net::UnixStream::connect(path).await.map_err(cannot)?)
            }
            None => Box::new(tokio::net::TcpStream::connect(("localhost", port)).await.map_err(cannot)?),
        };
        let mut conn = Conn { io, input: BytesMut::with_capacity(READ_SIZE), out: BytesMut::new() };
        let user = config
            .get_user()
            .ok_or_else(|| Error::config(format!("the URL {redacted} names no user for the replication connection")))?;
        let database = config.get_dbname().unwrap_or(user);
        let mut params = vec![("user", user), ("database", database), ("replication", "database")];
        params.extend_from_slice(SESSION_SETTINGS);
        params.push(("application_name", "pontoon"));
        let what = format!("logging in to {redacted} for replication");
        frontend::startup_message(params.iter().copied(), &mut conn.out).map_err(|e| io_error(e, &what))?;
        conn.flush(&what).await?;
        conn.login(user, config.get_password(), &what).await?;
        Ok(conn)
    }

    /// Answers the server's authentication requests until it is ready for queries.
    async fn login(&mut self, user: &str, password: Option<&[u8]>, what: &str) -> Result<()> {
        let failed = |detail: &str| {
            Error::new(ErrorKind::Database, format!("{what}: authentication failed for user {user}: {detail}"))
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, mut body) = self.frame(what).await?;
            match tag {
                b'R' if body.len() >= 4 => {
                    let code = body.get_i32();
                    let password =
                        || password.ok_or_else(|| failed("the server asks for a password and the URL has none"));
                    match code {
                        0 => {}
                        3 => frontend::password_message(password()?, &mut self.out).map_err(|e| io_error(e, what))?,
                        5 if body.len() >= 4 => {
                            let salt = [body[0], body[1], body[2], body[3]];
                            let hash = md5_hash(user.as_bytes(), password()?, salt);
                            frontend::password_message(hash.as_bytes(), &mut self.out)
                                .map_err(|e| io_error(e, what))?;
                        }
                        10 => {
                            if !body[..].split(|&b| b == 0).any(|m| m == SCRAM_SHA_256.as_bytes()) {
                                return Err(failed("the server offers no SASL mechanism but SCRAM-SHA-256-PLUS (TLS)"));
                            }
                            let s = ScramSha256::new(password()?, ChannelBinding::unsupported());
                            frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.out)
                                .map_err(|e| io_error(e, what))?;
                            scram = Some(s);
                        }
                        11 | 12 => {
                            let s = scram.as_mut().ok_or_else(|| failed("SASL message out of order"))?;
                            if code == 11 {
                                s.update(&body).map_err(|e| failed(&e.to_string()))?;
                                frontend::sasl_response(s.message(), &mut self.out).map_err(|e| io_error(e, what))?;
                            } else {
                                s.finish(&body).map_err(|e| failed(&e.to_string()))?;
                            }
                        }
                        other => return Err(failed(&format!("the server asks for authentication method {other}"))),
                    }
                    self.flush(what).await?;
                }
                // a failed login (28000, 28P01) maps to a permanent database error
                b'E' => return Err(server_error(&body, what)),
                b'Z' => return Ok(()),
                // parameter status, backend key, notices
                _ => {}
            }
        }
    }

    /// Sends what `out` holds.
    async fn flush(&mut self, what: &str) -> Result<()> {
        self.io.write_all(&self.out).await.map_err(|e| io_error(e, what))?;
        self.out.clear();
        Ok(())
    }

    /// Reads more bytes (cancel-safe). 0: the server closed the connection.
    async fn read(&mut self) -> std::io::Result<usize> {
        self.input.reserve(READ_SIZE);
        self.io.read_buf(&mut self.input).await
    }

    /// The next whole message in the input: its tag and body.
    fn try_frame(&mut self) -> Option<(u8, BytesMut)> {
        let header = self.input.get(..5)?;
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]).max(4) as usize;
        if self.input.len() < 1 + len {
            self.input.reserve(1 + len - self.input.len());
            return None;
        }
        let tag = self.input[0];
        let mut frame = self.input.split_to(1 + len);
        frame.advance(5);
        Some((tag, frame))
    }

    /// The next message, read as needed.
    async fn frame(&mut self, what: &str) -> Result<(u8, BytesMut)> {
        loop {
            if let Some(frame) = self.try_frame() {
                return Ok(frame);
            }
            if self.read().await.map_err(|e| io_error(e, what))? == 0 {
                return Err(Error::new(ErrorKind::Transient, format!("{what}: the server closed the connection")));
            }
        }
    }

    /// Sends a standby status update: `lsn` written, flushed and applied; with
    /// `reply`, the server answers with a keepalive.
    async fn status(&mut self, lsn: u64, reply: bool, what: &str) -> Result<()> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
        let mut body = Vec::with_capacity(34);
        body.push(b'r');
        for _ in 0..3 {
            body.extend_from_slice(&lsn.to_be_bytes());
        }
        body.extend_from_slice(&(now - PG_EPOCH_OFFSET_MICROS).to_be_bytes());
        body.push(u8::from(reply));
        frontend::CopyData::new(&body[..]).map_err(|e| io_error(e, what))?.write(&mut self.out);
        self.flush(what).await
    }

    /// Confirms `lsn`, ends the copy and reads until the server is ready for
    /// queries again (the slot is free then), then says goodbye. Errors only cut
    /// this short: the connection is dropped anyway.
    async fn finish(&mut self, lsn: u64, what: &str) {
        let ended = async {
            self.status(lsn, false, what).await?;
            frontend::copy_done(&mut self.out);
            self.flush(what).await?;
            while self.frame(what).await?.0 != b'Z' {}
            frontend::terminate(&mut self.out);
            self.flush(what).await
        };
        if let Err(e) =
            tokio::time::timeout(CLOSE_WAIT, ended).await.unwrap_or_else(|_| Err(Error::internal("timed out")))
        {
            tracing::debug!(error = %e, "the replication stream did not end cleanly");
        }
    }
}

/// An error response's message and SQLSTATE (DETAIL and the rest are left out, as
/// for every PostgreSQL error).
fn server_error(body: &[u8], what: &str) -> Error {
    let (mut code, mut message) = ("", "");
    for field in body.split(|&b| b == 0) {
        let Some((&kind, value)) = field.split_first() else { continue };
        let value = std::str::from_utf8(value).unwrap_or("(not UTF-8)");
        match kind {
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
    }
    Error::new(kind_of_sqlstate(code), format!("{what}: {message} (SQLSTATE {code})"))
}

fn io_error(e: std::io::Error, what: &str) -> Error {
    Error::new(ErrorKind::Transient, format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_keep_message_and_sqlstate_only() {
        let body = b"SERROR\0VERROR\0C55006\0Mreplication slot \"s\" is active for PID 7\0Dsecret detail\0\0";
        let e = server_error(body, "starting");
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert_eq!(e.message(), "starting: replication slot \"s\" is active for PID 7 (SQLSTATE 55006)");
        let e = server_error(b"C42704\0Mreplication slot \"s\" does not exist\0\0", "starting");
        assert_eq!(e.kind(), ErrorKind::Database);
    }
}
