//! The job file: parsed and validated without touching a database.
//!
//! Every mistake is collected (not just the first) with the line it is on, so
//! `pontoon plan` can report them all at once. Unknown keys are errors. `${VAR}` in a
//! URL is replaced from the environment; the value never appears in a message.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use pontoon_core::{ColumnType, SecretUrl};
use pontoon_sqlite::SqliteConnector;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One mistake in a job file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// 1-based line; 0 when the mistake has no single place (e.g. a missing section).
    pub line: usize,
    pub message: String,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 { write!(f, "line {}: {}", self.line, self.message) } else { f.write_str(&self.message) }
    }
}

/// All the mistakes of a job file, in line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobErrors {
    pub path: PathBuf,
    pub errors: Vec<JobError>,
}

impl fmt::Display for JobErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "{}: {n} error{} in the job file", self.path.display(), if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            write!(f, "\n  {}: {e}", self.path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for JobErrors {}

/// What change capture to use while syncing (used by `pontoon run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    Native,
    Triggers,
    Outbox,
    None,
}

/// `[sync]`: how `pontoon run` follows the source's changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSettings {
    /// `None`: native where the server allows it, triggers for SQLite.
    pub capture: Option<Capture>,
    /// Names what capture installs on the source (`pontoon_log_<name>`, slot
    /// `pontoon_<name>`): `[sync] name`, else the job file's name, reduced to
    /// `[a-z0-9_]`, at most 40 characters.
    pub name: String,
    /// Most change events applied in one batch.
    pub batch_events: usize,
    /// Line of `[sync] capture` (0 when absent), for errors about it.
    pub capture_line: usize,
}

/// `[verify]`: how `pontoon verify` compares and repairs. `Debug` shows the webhook's
/// scheme and host only (its path often holds a token).
#[derive(Clone, PartialEq)]
pub struct VerifySettings {
    /// Rows per compared chunk.
    pub chunk_rows: u64,
    /// Chunks compared at the same time (each with a connection to either side;
    /// default two per core).
    pub workers: usize,
    /// Most repair rounds of `verify --repair`.
    pub rounds: u32,
    /// Receives a JSON summary when differences are found (may hold a token: never
    /// shown whole).
    pub webhook: Option<String>,
    /// Incremental verify: the share of keys applied by the sync that are compared on
    /// both sides shortly afterwards (0 = off, 1 = every key; `changes = true` is 1).
    pub changes: f64,
}

impl fmt::Debug for VerifySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifySettings")
            .field("chunk_rows", &self.chunk_rows)
            .field("workers", &self.workers)
            .field("rounds", &self.rounds)
            .field("webhook", &self.webhook.as_deref().map(crate::alert::shown))
            .field("changes", &self.changes)
            .finish()
    }
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings {
            chunk_rows: 10_000,
            // the work is mostly the servers' (checksums, scans): two chunks per core
            // keep both servers busy (5M-row benchmarks: 4 workers beat 2 on 2 cores)
            workers: std::thread::available_parallelism().map(|n| n.get() * 2).unwrap_or(4).clamp(2, 16),
            rounds: 5,
            webhook: None,
            changes: 0.0,
        }
    }
}

/// A job id made of `[a-z0-9_]`, 1 to 40 characters, from any name.
pub fn job_id(name: &str) -> String {
    let mut id: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).take(40).collect();
    if id.is_empty() {
        id.push_str("job");
    }
    id
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySettings {
    pub workers: usize,
    pub chunk_rows: u64,
    /// 0 = unthrottled.
    pub max_rows_per_second: u64,
}

impl Default for CopySettings {
    /// Workers: one per core, 2 to 8 (on 2 cores, 2 workers beat 4: bench/RESULTS.md).
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        CopySettings { workers: cores.clamp(2, 8), chunk_rows: 10_000, max_rows_per_second: 0 }
    }
}

/// Where a target column's values come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSource {
    /// A source column (a rename when the names differ).
    Column(String),
    /// An SQL expression evaluated on the source, with an optional declared type.
    Sql { sql: String, ty: Option<ColumnType> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    pub target: String,
    pub from: ColumnSource,
    pub line: usize,
}

/// One `[[tables]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableJob {
    pub source: String,
    pub target: Option<String>,
    pub key: Option<Vec<String>>,
    pub partition_by: Option<String>,
    pub version_column: Option<String>,
    pub filter: Option<String>,
    pub exclude: Vec<String>,
    pub columns: Vec<ColumnMapping>,
    /// Line of the `[[tables]]` header, for errors found after connecting.
    pub line: usize,
    /// Line of each key of the entry (`key`, `where`, `exclude`, ...).
    pub key_lines: Vec<(String, usize)>,
}

impl TableJob {
    /// The line of `key` in this entry, or the entry's header line.
    pub fn line_of(&self, key: &str) -> usize {
        self.key_lines.iter().find(|(k, _)| k == key).map(|(_, l)| *l).unwrap_or(self.line)
    }

    pub fn target_name(&self) -> &str {
        self.target.as_deref().unwrap_or(&self.source)
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub path: PathBuf,
    /// The job file's directory: relative SQLite paths and the state store live here.
    pub base_dir: PathBuf,
    pub source: SecretUrl,
    pub target: SecretUrl,
    /// The state store file: `[state] url`, or `<job file>.pontoon.db` beside it.
    state_file: PathBuf,
    pub copy: CopySettings,
    pub sync: SyncSettings,
    pub verify: VerifySettings,
    /// Empty: every source table with a primary key, same names and columns.
    pub tables: Vec<TableJob>,
}

impl Job {
    /// Reads and validates a job file.
    pub fn load(path: &Path) -> Result<Job, JobErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| JobErrors {
            path: path.to_path_buf(),
            errors: vec![JobError { line: 0, message: format!("cannot read the job file: {e}") }],
        })?;
        Job::parse(path, &text, &|name| std::env::var(name).ok())
    }

    /// Parses job text; `env` resolves `${VAR}` references.
    pub fn parse(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Job, JobErrors> {
        let mut p = Parser { text, env, errors: Vec::new() };
        let job = p.job(path);
        let mut errors = p.errors;
        errors.sort_by_key(|e| e.line);
        match job {
            Some(job) if errors.is_empty() => Ok(job),
            _ => Err(JobErrors { path: path.to_path_buf(), errors }),
        }
    }

    /// The state store's location: the `[state] url`, or `<job file>.pontoon.db` beside it.
    pub fn state_path(&self) -> PathBuf {
        self.state_file.clone()
    }
}

struct Parser<'a> {
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<JobError>,
}

type Item<'i> = Spanned<DeValue<'i>>;

impl<'a> Parser<'a> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = self.line(span);
        self.errors.push(JobError { line, message: message.into() });
    }

    fn job(&mut self, path: &Path) -> Option<Job> {
        let root = match DeTable::parse(self.text) {
            Ok(t) => t,
            Err(e) => {
                let line = e.span().map(|s| self.line(s)).unwrap_or(0);
                self.errors.push(JobError { line, message: format!("not valid TOML: {}", e.message()) });
                return None;
            }
        };
        let root_span = root.span();
        let root = root.into_inner();
        let mut source = None;
        let mut target = None;
        let base_dir =
            path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p }).unwrap_or(Path::new("."));
        let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "job".into());
        let mut state_file = base_dir.join(format!("{stem}.pontoon.db"));
        let mut copy = CopySettings::default();
        let mut sync = SyncSettings { capture: None, name: job_id(&stem), batch_events: 50_000, capture_line: 0 };
        let mut verify = VerifySettings::default();
        let mut tables = Vec::new();
        for (key, value) in root.iter() {
            match key.get_ref().as_ref() {
                "source" => source = self.url_section(value, "source"),
                "target" => target = self.url_section(value, "target"),
                "state" => {
                    // resolved like any SQLite URL (relative to the job file's directory)
                    let resolved = self.url_section(value, "state").map(|url| SqliteConnector::new(&url, &base_dir));
                    match resolved {
                        Some(Ok(c)) => state_file = c.path().to_path_buf(),
                        Some(Err(e)) => self.err(value.span(), format!("[state] url: {}", e.message())),
                        None => {}
                    }
                }
                "copy" => self.copy_section(value, &mut copy),
                "sync" => self.sync_section(value, &mut sync),
                "verify" => self.verify_section(value, &mut verify),
                "tables" => match value.get_ref().as_array() {
                    Some(arr) => {
                        for t in arr.iter() {
                            if let Some(tj) = self.table(t) {
                                tables.push(tj);
                            }
                        }
                    }
                    None => self.err(value.span(), "`tables` must be an array of tables: write `[[tables]]`"),
                },
                other => self.err(
                    key.span(),
                    format!("unknown section `{other}` (expected source, target, state, copy, sync, verify, tables)"),
                ),
            }
        }
        if !root.keys().any(|k| k.get_ref() == "source") {
            self.err(root_span.clone(), "missing section [source] with `url`");
        }
        if !root.keys().any(|k| k.get_ref() == "target") {
            self.err(root_span, "missing section [target] with `url`");
        }
        let mut seen: Vec<(String, usize)> = Vec::new();
        for t in &tables {
            if let Some((_, first)) = seen.iter().find(|(n, _)| n == t.target_name()) {
                let message = format!(
                    "target table `{}` is already written by the [[tables]] entry on line {first}",
                    t.target_name()
                );
                self.errors.push(JobError { line: t.line, message });
            }
            seen.push((t.target_name().to_string(), t.line));
        }
        Some(Job {
            path: path.to_path_buf(),
            base_dir,
            source: source?,
            target: target?,
            state_file,
            copy,
            sync,
            verify,
            tables,
        })
    }

    fn table_of<'v, 'i>(&mut self, value: &'v Item<'i>, what: &str) -> Option<&'v DeTable<'i>> {
        match value.get_ref().as_table() {
            Some(t) => Some(t),
            None => {
                self.err(value.span(), format!("`{what}` must be a table"));
                None
            }
        }
    }

    fn string(&mut self, value: &Item<'_>, what: &str) -> Option<String> {
        match value.get_ref().as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.err(value.span(), format!("`{what}` must be a string, not {}", value.get_ref().type_str()));
                None
            }
        }
    }

    fn non_empty_string(&mut self, value: &Item<'_>, what: &str) -> Option<String> {
        let s = self.string(value, what)?;
        if s.trim().is_empty() {
            self.err(value.span(), format!("`{what}` must not be empty"));
            return None;
        }
        Some(s)
    }

    fn strings(&mut self, value: &Item<'_>, what: &str) -> Option<Vec<String>> {
        let Some(arr) = value.get_ref().as_array() else {
            self.err(value.span(), format!("`{what}` must be an array of strings"));
            return None;
        };
        let mut out = Vec::new();
        for v in arr.iter() {
            out.push(self.non_empty_string(v, what)?);
        }
        Some(out)
    }

    fn unsigned(&mut self, value: &Item<'_>, what: &str, min: u64) -> Option<u64> {
        let parsed = value.get_ref().as_integer().and_then(|i| u64::from_str_radix(i.as_str(), i.radix()).ok());
        match parsed {
            Some(n) if n >= min => Some(n),
            _ => {
                self.err(value.span(), format!("`{what}` must be an integer >= {min}"));
                None
            }
        }
    }

    fn url_section(&mut self, value: &Item<'_>, section: &str) -> Option<SecretUrl> {
        let table = self.table_of(value, section)?;
        let mut url = None;
        for (k, v) in table.iter() {
            match k.get_ref().as_ref() {
                "url" => {
                    if let Some(raw) = self.non_empty_string(v, &format!("{section}.url")) {
                        url = self.expand_env(&raw, v.span(), &format!("[{section}] url"));
                    }
                }
                other => self.err(k.span(), format!("unknown key `{other}` in [{section}] (expected url)")),
            }
        }
        if url.is_none() && !table.keys().any(|k| k.get_ref() == "url") {
            self.err(value.span(), format!("[{section}] needs `url`"));
        }
        let url = url?;
        let known = ["postgres://", "postgresql://", "mysql://", "mariadb://", "sqlite:"];
        if !known.iter().any(|p| url.starts_with(p)) {
            self.err(
                value.span(),
                format!(
                    "[{section}] url must start with postgres://, mysql:// or sqlite: (got `{}`)",
                    pontoon_core::redact_url(&url)
                ),
            );
            return None;
        }
        if section == "state" && !url.starts_with("sqlite:") {
            self.err(value.span(), "[state] url: only an SQLite state store (sqlite:PATH) is supported so far");
            return None;
        }
        Some(SecretUrl::new(url))
    }

    /// Replaces `${NAME}` from the environment; a missing variable is an error that
    /// names the variable (never a value).
    fn expand_env(&mut self, raw: &str, span: Range<usize>, what: &str) -> Option<String> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        let mut ok = true;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                self.err(span.clone(), format!("{what}: `${{` without a closing `}}`"));
                return None;
            };
            let name = &after[..end];
            match (self.env)(name) {
                Some(v) => out.push_str(&v),
                None => {
                    self.err(span.clone(), format!("{what}: environment variable {name} is not set"));
                    ok = false;
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        ok.then_some(out)
    }

    fn copy_section(&mut self, value: &Item<'_>, copy: &mut CopySettings) {
        let Some(table) = self.table_of(value, "copy") else {
            return;
        };
        for (k, v) in table.iter() {
            match k.get_ref().as_ref() {
                "workers" => {
                    if let Some(n) = self.unsigned(v, "copy.workers", 1) {
                        if n > 64 {
                            self.err(v.span(), "`copy.workers` must be at most 64");
                        } else {
                            copy.workers = n as usize;
                        }
                    }
                }
                "chunk_rows" => {
                    if let Some(n) = self.unsigned(v, "copy.chunk_rows", 1) {
                        copy.chunk_rows = n;
                    }
                }
                "max_rows_per_second" => {
                    if let Some(n) = self.unsigned(v, "copy.max_rows_per_second", 0) {
                        copy.max_rows_per_second = n;
                    }
                }
                other => self.err(
                    k.span(),
                    format!("unknown key `{other}` in [copy] (expected workers, chunk_rows, max_rows_per_second)"),
                ),
            }
        }
    }

    fn sync_section(&mut self, value: &Item<'_>, sync: &mut SyncSettings) {
        let Some(table) = self.table_of(value, "sync") else {
            return;
        };
        for (k, v) in table.iter() {
            match k.get_ref().as_ref() {
                "capture" => {
                    sync.capture_line = self.line(v.span());
                    match self.string(v, "sync.capture").as_deref() {
                        Some("native") => sync.capture = Some(Capture::Native),
                        Some("triggers") => sync.capture = Some(Capture::Triggers),
                        Some("outbox") => sync.capture = Some(Capture::Outbox),
                        Some("none") => sync.capture = Some(Capture::None),
                        Some(other) => self.err(
                            v.span(),
                            format!("`sync.capture` must be native, triggers, outbox or none (got `{other}`)"),
                        ),
                        None => {}
                    }
                }
                "name" => {
                    if let Some(name) = self.non_empty_string(v, "sync.name") {
                        let id = job_id(&name);
                        if id != name {
                            self.err(
                                v.span(),
                                format!("`sync.name` may hold only a-z, 0-9 and _, at most 40 (got `{name}`)"),
                            );
                        }
                        sync.name = id;
                    }
                }
                "batch_events" => {
                    if let Some(n) = self.unsigned(v, "sync.batch_events", 1) {
                        if n > 1_000_000 {
                            self.err(v.span(), "`sync.batch_events` must be at most 1000000");
                        } else {
                            sync.batch_events = n as usize;
                        }
                    }
                }
                other => self
                    .err(k.span(), format!("unknown key `{other}` in [sync] (expected capture, name, batch_events)")),
            }
        }
    }

    fn verify_section(&mut self, value: &Item<'_>, verify: &mut VerifySettings) {
        let Some(table) = self.table_of(value, "verify") else {
            return;
        };
        for (k, v) in table.iter() {
            match k.get_ref().as_ref() {
                "chunk_rows" => {
                    if let Some(n) = self.unsigned(v, "verify.chunk_rows", 1) {
                        verify.chunk_rows = n;
                    }
                }
                "workers" => {
                    if let Some(n) = self.unsigned(v, "verify.workers", 1) {
                        verify.workers = n.min(64) as usize;
                    }
                }
                "rounds" => {
                    if let Some(n) = self.unsigned(v, "verify.rounds", 1) {
                        verify.rounds = n.min(u32::MAX as u64) as u32;
                    }
                }
                "webhook" => {
                    if let Some(raw) = self.non_empty_string(v, "verify.webhook")
                        && let Some(url) = self.expand_env(&raw, v.span(), "[verify] webhook")
                    {
                        if url.starts_with("http://") || url.starts_with("https://") {
                            verify.webhook = Some(url);
                        } else {
                            self.err(v.span(), "`verify.webhook` must be an http:// or https:// URL");
                        }
                    }
                }
                "changes" => match v.get_ref() {
                    DeValue::Boolean(b) => verify.changes = if *b { 1.0 } else { 0.0 },
                    DeValue::Float(f) => match f.as_str().parse::<f64>() {
                        Ok(x) if (0.0..=1.0).contains(&x) => verify.changes = x,
                        _ => self.err(v.span(), "`verify.changes` must be true, false or a share from 0.0 to 1.0"),
                    },
                    _ => self.err(v.span(), "`verify.changes` must be true, false or a share from 0.0 to 1.0"),
                },
                other => self.err(
                    k.span(),
                    format!(
                        "unknown key `{other}` in [verify] (expected chunk_rows, workers, rounds, webhook, changes)"
                    ),
                ),
            }
        }
    }

    fn table(&mut self, value: &Item<'_>) -> Option<TableJob> {
        let table = self.table_of(value, "tables")?;
        let line = self.line(value.span());
        let mut tj = TableJob { line, ..TableJob::default() };
        let mut columns_item = None;
        for (k, v) in table.iter() {
            tj.key_lines.push((k.get_ref().to_string(), self.line(k.span())));
            match k.get_ref().as_ref() {
                "source" => tj.source = self.non_empty_string(v, "source").unwrap_or_default(),
                "target" => tj.target = self.non_empty_string(v, "target"),
                "key" => {
                    tj.key = self.strings(v, "key");
                    if tj.key.as_ref().is_some_and(|k| k.is_empty()) {
                        self.err(v.span(), "`key` must name at least one column");
                    }
                }
                "partition_by" => tj.partition_by = self.non_empty_string(v, "partition_by"),
                "version_column" => tj.version_column = self.non_empty_string(v, "version_column"),
                "where" => tj.filter = self.non_empty_string(v, "where"),
                "exclude" => tj.exclude = self.strings(v, "exclude").unwrap_or_default(),
                "columns" => columns_item = Some(v),
                other => self.err(
                    k.span(),
                    format!(
                        "unknown key `{other}` in [[tables]] (expected source, target, key, partition_by, version_column, where, exclude, columns)"
                    ),
                ),
            }
        }
        if !table.keys().any(|k| k.get_ref() == "source") {
            self.err(value.span(), "[[tables]] entry needs `source`");
        }
        if let Some(cols) = columns_item {
            tj.columns = self.columns(cols);
        }
        for c in &tj.columns {
            if tj.exclude.contains(&c.target) && matches!(&c.from, ColumnSource::Column(s) if *s == c.target) {
                let message = format!("column `{}` is both excluded and mapped", c.target);
                self.errors.push(JobError { line: c.line, message });
            }
        }
        Some(tj)
    }

    fn columns(&mut self, value: &Item<'_>) -> Vec<ColumnMapping> {
        let Some(table) = self.table_of(value, "tables.columns") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in table.iter() {
            let target = k.get_ref().to_string();
            let line = self.line(k.span());
            let from = if let Some(s) = v.get_ref().as_str() {
                if s.trim().is_empty() {
                    self.err(v.span(), format!("column `{target}`: the source column name is empty"));
                    continue;
                }
                ColumnSource::Column(s.to_string())
            } else if let Some(t) = v.get_ref().as_table() {
                let mut sql = None;
                let mut ty = None;
                for (ik, iv) in t.iter() {
                    match ik.get_ref().as_ref() {
                        "sql" => sql = self.non_empty_string(iv, "sql"),
                        "type" => {
                            if let Some(name) = self.string(iv, "type") {
                                match parse_type_name(&name) {
                                    Some(t) => ty = Some(t),
                                    None => self.err(iv.span(), format!("column `{target}`: unknown type `{name}`")),
                                }
                            }
                        }
                        other => self
                            .err(ik.span(), format!("column `{target}`: unknown key `{other}` (expected sql, type)")),
                    }
                }
                match sql {
                    Some(sql) => ColumnSource::Sql { sql, ty },
                    None => {
                        if !t.keys().any(|k| k.get_ref() == "sql") {
                            self.err(v.span(), format!("column `{target}`: an inline table needs `sql = \"...\"`"));
                        }
                        continue;
                    }
                }
            } else {
                self.err(v.span(), format!("column `{target}`: expected a source column name or {{ sql = \"...\" }}"));
                continue;
            };
            out.push(ColumnMapping { target, from, line });
        }
        out
    }
}

/// Portable type names accepted in `type = "..."` of a computed column.
pub fn parse_type_name(name: &str) -> Option<ColumnType> {
    let n = name.trim().to_ascii_lowercase();
    let (base, args) = match n.split_once('(') {
        Some((b, rest)) => (b.trim().to_string(), Some(rest.trim_end_matches(')').to_string())),
        None => (n.clone(), None),
    };
    let nums: Vec<u32> =
        args.as_deref().map(|a| a.split(',').filter_map(|x| x.trim().parse().ok()).collect()).unwrap_or_default();
    Some(match base.as_str() {
        "bool" | "boolean" => ColumnType::Bool,
        "int8" | "tinyint" => ColumnType::Int { bytes: 1, unsigned: false },
        "int16" | "smallint" => ColumnType::Int { bytes: 2, unsigned: false },
        "int32" | "int" | "integer" => ColumnType::I32,
        "int64" | "bigint" => ColumnType::I64,
        "float32" | "real" | "float" => ColumnType::Float32,
        "float64" | "double" | "double precision" => ColumnType::Float64,
        "decimal" | "numeric" => ColumnType::Decimal {
            precision: nums.first().copied(),
            scale: nums.get(1).copied().or(nums.first().map(|_| 0)),
        },
        "text" | "string" => ColumnType::TEXT,
        "varchar" => ColumnType::Text { max_chars: Some(*nums.first()?) },
        "bytes" | "bytea" | "blob" => ColumnType::Bytes { max_bytes: None },
        "date" => ColumnType::Date,
        "time" => ColumnType::Time,
        "timestamp" | "datetime" => ColumnType::Timestamp,
        "timestamptz" => ColumnType::TimestampTz,
        "json" | "jsonb" => ColumnType::Json,
        "uuid" => ColumnType::Uuid,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Job, JobErrors> {
        Job::parse(Path::new("/jobs/shop.toml"), text, &|name| (name == "PW").then(|| "s3cret".to_string()))
    }

    #[test]
    fn full_example_parses() {
        let job = parse(
            r#"
[source]
url = "mysql://app:${PW}@127.0.0.1:3306/shop"
[target]
url = "postgres://app@127.0.0.1:5432/shop"
[copy]
workers = 2
chunk_rows = 500
[sync]
capture = "triggers"
[[tables]]
source = "orders"
target = "orders_v2"
key = ["id"]
partition_by = "user_pin"
where = "status <> 'draft'"
exclude = ["legacy_flag"]
[tables.columns]
order_number = "order_no"
amount_cents = { sql = "amount * 100", type = "bigint" }
"#,
        )
        .unwrap();
        assert_eq!(job.source.expose(), "mysql://app:s3cret@127.0.0.1:3306/shop");
        assert_eq!(job.source.to_string(), "mysql://app:***@127.0.0.1:3306/shop");
        assert_eq!(job.copy, CopySettings { workers: 2, chunk_rows: 500, max_rows_per_second: 0 });
        assert_eq!(job.sync.capture, Some(Capture::Triggers));
        let t = &job.tables[0];
        assert_eq!(t.target_name(), "orders_v2");
        assert_eq!(t.line, 11, "the [[tables]] header line");
        assert_eq!(
            t.columns[0],
            ColumnMapping { target: "order_number".into(), from: ColumnSource::Column("order_no".into()), line: 19 }
        );
        assert_eq!(t.columns[1].from, ColumnSource::Sql { sql: "amount * 100".into(), ty: Some(ColumnType::I64) });
        assert_eq!(job.state_path(), Path::new("/jobs/shop.pontoon.db"));
    }

    #[test]
    fn the_state_store_is_resolved_like_an_sqlite_url() {
        let job = |state: &str| {
            let text = format!(
                "[source]\nurl = \"sqlite:a.db\"\n[target]\nurl = \"sqlite:b.db\"\n[state]\nurl = \"{state}\"\n"
            );
            Job::parse(Path::new("/jobs/shop.toml"), &text, &|_| None)
        };
        assert_eq!(job("sqlite:st/run.db").unwrap().state_path(), Path::new("/jobs/st/run.db"));
        assert_eq!(job("sqlite:///var/run.db").unwrap().state_path(), Path::new("/var/run.db"));
        let errs = job("sqlite::memory:").unwrap_err();
        assert_eq!(errs.errors[0].line, 5, "{errs}");
    }

    #[test]
    fn every_mistake_is_reported_with_its_line() {
        let errs = parse(
            r#"[source]
url = "oracle://x"
[target]
url = "postgres://u:${NOPE}@h/db"
[copy]
workers = 0
chunk_size = 10
[[tables]]
target = "t"
colour = "red"
[tables.columns]
a = { sql = "" }
b = 5
"#,
        )
        .unwrap_err();
        let lines: Vec<(usize, &str)> = errs.errors.iter().map(|e| (e.line, e.message.as_str())).collect();
        assert!(lines.iter().any(|(l, m)| *l == 1 && m.contains("url must start with")), "{lines:?}");
        assert!(lines.iter().any(|(l, m)| *l == 4 && m.contains("NOPE is not set")), "{lines:?}");
        assert!(lines.iter().any(|(l, m)| *l == 6 && m.contains("workers")), "{lines:?}");
        assert!(lines.iter().any(|(l, m)| *l == 7 && m.contains("unknown key `chunk_size`")), "{lines:?}");
        assert!(lines.iter().any(|(l, m)| *l == 8 && m.contains("needs `source`")), "{lines:?}");
        assert!(lines.iter().any(|(l, m)| *l == 10 && m.contains("unknown key `colour`")), "{lines:?}");
        assert!(lines.iter().any(|(l, m)| *l == 12 && m.contains("must not be empty")), "{lines:?}");
        assert!(lines.iter().any(|(l, m)| *l == 13 && m.contains("column `b`")), "{lines:?}");
        assert!(!errs.to_string().contains("s3cret"));
    }

    #[test]
    fn toml_syntax_error_has_a_line() {
        let errs = parse("[source]\nurl = \"sqlite:a.db\"\n[target\n").unwrap_err();
        assert_eq!(errs.errors.len(), 1);
        assert_eq!(errs.errors[0].line, 3);
    }

    #[test]
    fn duplicate_targets_are_refused() {
        let errs = parse(
            "[source]\nurl = \"sqlite:a.db\"\n[target]\nurl = \"sqlite:b.db\"\n[[tables]]\nsource = \"a\"\ntarget = \"x\"\n[[tables]]\nsource = \"b\"\ntarget = \"x\"\n",
        )
        .unwrap_err();
        assert_eq!(errs.errors[0].line, 8);
        assert!(errs.errors[0].message.contains("line 5"));
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    const PIECES: &[&str] = &[
        "[source]\n",
        "[target]\n",
        "[copy]\n",
        "[[tables]]\n",
        "[tables.columns]\n",
        "url = \"sqlite:a.db\"\n",
        "url = \"postgres://u:${X}@h/d\"\n",
        "workers = 3\n",
        "workers = -1\n",
        "chunk_rows = \"x\"\n",
        "source = \"t\"\n",
        "key = [\"a\", 1]\n",
        "x = { sql = \"1\", type = \"numeric(3,1)\" }\n",
        "y = { type = 5 }\n",
        "where = \"\"\n",
        "[sync]\ncapture = \"native\"\n",
        "= = =\n",
        "\"\n",
        "[[tables]\n",
        "exclude = []\n",
    ];

    proptest! {
        /// Whatever the text, the parser returns a job or errors with lines, never panics.
        #[test]
        fn any_text_parses_or_fails_cleanly(picks in proptest::collection::vec(0..PIECES.len(), 0..24), noise in ".{0,40}") {
            let mut text: String = picks.iter().map(|i| PIECES[*i]).collect();
            text.push_str(&noise);
            let lines = text.lines().count().max(1);
            match Job::parse(Path::new("/j/job.toml"), &text, &|_| None) {
                Ok(job) => prop_assert!(!job.source.expose().is_empty()),
                Err(errs) => {
                    prop_assert!(!errs.errors.is_empty());
                    for e in &errs.errors {
                        prop_assert!(e.line <= lines + 1, "line {} of {}", e.line, lines);
                    }
                }
            }
        }
    }

    #[test]
    fn the_verify_section_and_its_mistakes() {
        let base = "[source]\nurl = \"sqlite:a.db\"\n[target]\nurl = \"sqlite:b.db\"\n";
        let env = |n: &str| (n == "HOOK_TOKEN").then(|| "s3cret".to_string());
        let job = Job::parse(
            Path::new("j.toml"),
            &format!("{base}[verify]\nchunk_rows = 500\nrounds = 2\nwebhook = \"https://hooks.example/${{HOOK_TOKEN}}\"\nchanges = 0.25\n"),
            &env,
        )
        .unwrap();
        assert_eq!(
            job.verify,
            VerifySettings {
                chunk_rows: 500,
                workers: VerifySettings::default().workers,
                rounds: 2,
                webhook: Some("https://hooks.example/s3cret".into()),
                changes: 0.25
            }
        );
        assert!(!format!("{job:?}").contains("s3cret"), "the webhook's token is not in Debug output");
        assert_eq!(Job::parse(Path::new("j.toml"), base, &env).unwrap().verify, VerifySettings::default());
        let errs = Job::parse(
            Path::new("j.toml"),
            &format!(
                "{base}[verify]\nchunk_rows = 0\nwebhook = \"ftp://x\"\nchanges = 2.0\ncolour = 1\nrounds = \"many\"\n"
            ),
            &env,
        )
        .unwrap_err();
        let lines: Vec<usize> = errs.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [6, 7, 8, 9, 10], "{errs}");
        assert!(errs.to_string().contains("unknown key `colour` in [verify]"), "{errs}");
        let missing =
            Job::parse(Path::new("j.toml"), &format!("{base}[verify]\nwebhook = \"https://h/${{NOPE}}\"\n"), &env)
                .unwrap_err();
        assert!(missing.to_string().contains("[verify] webhook: environment variable NOPE is not set"), "{missing}");
    }
}
