//! Planning: introspect source and target, apply the job's mapping, and decide what
//! each table's copy reads and writes. Nothing is written anywhere.
//!
//! Every problem found is collected (with the job-file line of its `[[tables]]`
//! entry or column) and reported together, like the job file's own errors.

use std::collections::HashSet;

use pontoon_core::convert::compatible;
use pontoon_core::{
    Column, ColumnType, Connector, Engine, Error, ErrorKind, Reader, Result, ScanSpec, SelectExpr, SelectItem,
    TableSchema,
};
use serde::Serialize;

use crate::job::{ColumnSource, Job, TableJob};

/// What the copy of one table reads and writes.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub job: TableJob,
    pub source: TableSchema,
    /// The read: target columns in order, evaluated on the source.
    pub scan: ScanSpec,
    /// The target table as pontoon would create it (portable types, mapped key).
    pub wanted: TableSchema,
    /// The target table as it exists now, if it does.
    pub existing: Option<TableSchema>,
    /// Positions of the key columns in `scan.select` (for error messages).
    pub key_positions: Vec<usize>,
    pub estimated_rows: u64,
}

impl TablePlan {
    pub fn target_name(&self) -> &str {
        &self.wanted.name
    }

    /// A stable description of what this table's copy reads and writes: a resumed run
    /// with a different fingerprint would mix two mappings in one target table.
    pub fn fingerprint(&self) -> String {
        serde_json::to_string(&(&self.scan, &self.wanted.name, &self.wanted.primary_key)).unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub tables: Vec<TablePlan>,
}

/// One row of the type mapping `plan` prints.
#[derive(Debug, Clone, Serialize)]
pub struct MappedColumn {
    pub target: String,
    pub source: String,
    pub source_type: String,
    pub portable: String,
    pub target_type: String,
    pub key: bool,
}

impl TablePlan {
    /// The column-by-column mapping, for `plan`'s output.
    pub fn mapping(&self, target: &dyn Connector) -> Vec<MappedColumn> {
        self.scan
            .select
            .iter()
            .zip(&self.wanted.columns)
            .map(|(item, col)| {
                let (source, source_type) = match &item.expr {
                    SelectExpr::Column(c) => {
                        (c.clone(), self.source.column(c).map(|s| s.native.clone()).unwrap_or_default())
                    }
                    SelectExpr::Sql(s) => (format!("sql: {s}"), "expression".into()),
                };
                let target_type = match self.existing.as_ref().and_then(|t| t.column(&col.name)) {
                    Some(existing) => format!("{} (existing)", existing.native),
                    None if !col.native.is_empty() => col.native.clone(),
                    None => target.native_type(&col.ty),
                };
                MappedColumn {
                    target: col.name.clone(),
                    source,
                    source_type,
                    portable: col.ty.to_string(),
                    target_type,
                    key: self.wanted.primary_key.contains(&col.name),
                }
            })
            .collect()
    }
}

/// Problems found while planning, each with its job-file line.
#[derive(Debug, Default)]
struct Problems(Vec<(usize, String)>);

impl Problems {
    fn add(&mut self, line: usize, message: impl Into<String>) {
        self.0.push((line, message.into()));
    }
}

/// Connects to both sides (one reader and one writer connection) and plans every
/// table of the job. Errors: `Connect`/`Database` when a side cannot be reached,
/// `Config` listing every mapping problem with its line.
pub async fn plan(job: &Job, source: &dyn Connector, target: &dyn Connector) -> Result<Plan> {
    let mut reader = source.reader().await.map_err(|e| side_error("source", &job.source, e))?;
    // the target is only read: `plan` writes nothing, not even a new SQLite file
    let mut treader = match target.reader().await {
        Ok(r) => Some(r),
        Err(e) if target.engine() == Engine::Sqlite && e.kind() == ErrorKind::Config => None,
        Err(e) => return Err(side_error("target", &job.target, e)),
    };
    let mut problems = Problems::default();

    let table_jobs: Vec<TableJob> = if job.tables.is_empty() {
        let mut all = Vec::new();
        for name in reader.list_tables().await? {
            if name.starts_with("pontoon_") {
                // pontoon's own change-log and bookkeeping tables (capture)
                continue;
            }
            match reader.describe(&name).await {
                Ok(Some(s)) if !s.primary_key.is_empty() => all.push(TableJob { source: name, ..TableJob::default() }),
                Ok(_) => tracing::info!(table = %name, "skipping a table without a primary key"),
                Err(e) => problems.add(0, format!("table {name}: {e}")),
            }
        }
        all
    } else {
        job.tables.clone()
    };

    // a same-engine copy creates target columns with the source's exact types
    let same_engine = source.engine() == target.engine();
    let mut tables = Vec::new();
    for tj in table_jobs {
        match plan_table(&tj, reader.as_mut(), same_engine, &mut problems).await? {
            Some(mut tp) => {
                let existing = match treader.as_mut() {
                    Some(r) => r.describe(tp.target_name()).await?,
                    None => None,
                };
                match existing {
                    Some(existing) => {
                        check_existing(&tp, &existing, &mut problems);
                        tp.existing = Some(existing);
                    }
                    None => tp.existing = None,
                }
                tables.push(tp);
            }
            None => continue,
        }
    }
    if problems.0.is_empty() {
        Ok(Plan { tables })
    } else {
        problems.0.sort_by_key(|(l, _)| *l);
        let lines: Vec<String> = problems
            .0
            .iter()
            .map(|(l, m)| {
                if *l > 0 {
                    format!("{}: line {l}: {m}", job.path.display())
                } else {
                    format!("{}: {m}", job.path.display())
                }
            })
            .collect();
        Err(Error::config(format!("{} problem(s) with the job:\n  {}", lines.len(), lines.join("\n  "))))
    }
}

fn side_error(side: &str, url: &pontoon_core::SecretUrl, e: Error) -> Error {
    let kind = e.kind();
    Error::new(kind, format!("cannot connect to the {side} database {url}")).with_source(e)
}

/// Plans one table; `Ok(None)` when problems were recorded instead.
async fn plan_table(
    tj: &TableJob,
    reader: &mut dyn Reader,
    keep_native: bool,
    problems: &mut Problems,
) -> Result<Option<TablePlan>> {
    let line = tj.line;
    let source = match reader.describe(&tj.source).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            problems.add(line, format!("table `{}` does not exist in the source", tj.source));
            return Ok(None);
        }
        Err(e) if matches!(e.kind(), ErrorKind::Unsupported | ErrorKind::Schema) => {
            problems.add(line, e.in_table(&tj.source).to_string());
            return Ok(None);
        }
        Err(e) => return Err(e.in_table(&tj.source)),
    };
    let before = problems.0.len();
    let source_col = |name: &str| source.column(name);

    let key: Vec<String> = match &tj.key {
        Some(k) => k.clone(),
        None => source.primary_key.clone(),
    };
    if key.is_empty() {
        problems.add(
            tj.line_of("key"),
            format!("table `{}` has no primary key: set `key = [...]` to a unique, non-null key", tj.source),
        );
    }
    for k in &key {
        if source_col(k).is_none() {
            problems.add(tj.line_of("key"), format!("key column `{k}` does not exist in source table `{}`", tj.source));
        }
    }
    for (what, col) in [("partition_by", &tj.partition_by), ("version_column", &tj.version_column)] {
        if let Some(c) = col
            && source_col(c).is_none()
        {
            problems
                .add(tj.line_of(what), format!("{what} column `{c}` does not exist in source table `{}`", tj.source));
        }
    }
    for x in &tj.exclude {
        if source_col(x).is_none() {
            problems.add(
                tj.line_of("exclude"),
                format!("excluded column `{x}` does not exist in source table `{}`", tj.source),
            );
        }
        if key.contains(x) {
            problems.add(tj.line_of("exclude"), format!("key column `{x}` cannot be excluded"));
        }
    }

    // Target columns: source columns in source order (renamed where mapped, unless
    // excluded), then computed columns in job order.
    let mut renamed_from: HashSet<&str> = HashSet::new();
    for m in &tj.columns {
        if let ColumnSource::Column(src) = &m.from {
            if source_col(src).is_none() {
                problems.add(
                    m.line,
                    format!(
                        "column `{}` maps from `{src}`, which does not exist in source table `{}`",
                        m.target, tj.source
                    ),
                );
            }
            renamed_from.insert(src.as_str());
        }
    }
    let mut select = Vec::new();
    let mut columns = Vec::new();
    for c in &source.columns {
        if tj.exclude.contains(&c.name) {
            continue;
        }
        let targets: Vec<&str> = tj
            .columns
            .iter()
            .filter(|m| matches!(&m.from, ColumnSource::Column(s) if *s == c.name))
            .map(|m| m.target.as_str())
            .collect();
        let names: Vec<&str> = if targets.is_empty() {
            if renamed_from.contains(c.name.as_str()) { vec![] } else { vec![c.name.as_str()] }
        } else {
            targets
        };
        for name in names {
            select.push(SelectItem { expr: SelectExpr::Column(c.name.clone()), ty: c.ty.clone() });
            columns.push(Column {
                name: name.to_string(),
                ty: c.ty.clone(),
                nullable: c.nullable,
                native: if keep_native { c.native.clone() } else { String::new() },
                has_default: false,
            });
        }
    }
    let computed: Vec<_> = tj
        .columns
        .iter()
        .filter_map(|m| match &m.from {
            ColumnSource::Sql { sql, ty } => Some((m, sql, ty)),
            ColumnSource::Column(_) => None,
        })
        .collect();
    let undeclared: Vec<String> =
        computed.iter().filter(|(_, _, ty)| ty.is_none()).map(|(_, sql, _)| (*sql).clone()).collect();
    let mut inferred = if undeclared.is_empty() {
        Vec::new()
    } else {
        match reader.describe_exprs(&tj.source, &undeclared).await {
            Ok(t) => t,
            Err(e) if !e.is_transient() => {
                problems.add(
                    computed[0].0.line,
                    format!("a computed column of table `{}` is not valid SQL on the source: {e}", tj.source),
                );
                vec![ColumnType::TEXT; undeclared.len()]
            }
            Err(e) => return Err(e),
        }
    }
    .into_iter();
    for (m, sql, ty) in &computed {
        let ty = match ty {
            Some(t) => t.clone(),
            None => inferred.next().unwrap_or(ColumnType::TEXT),
        };
        select.push(SelectItem { expr: SelectExpr::Sql((*sql).clone()), ty: ty.clone() });
        columns.push(Column { name: m.target.clone(), ty, nullable: true, native: String::new(), has_default: false });
    }
    let mut seen = HashSet::new();
    for c in &columns {
        if !seen.insert(c.name.as_str()) {
            problems.add(line, format!("target column `{}` is produced twice", c.name));
        }
    }

    // Key columns must reach the target as plain columns.
    let mut key_positions = Vec::new();
    let mut target_key = Vec::new();
    for k in &key {
        match select.iter().position(|s| matches!(&s.expr, SelectExpr::Column(c) if c == k)) {
            Some(p) => {
                key_positions.push(p);
                target_key.push(columns[p].name.clone());
            }
            None if source_col(k).is_some() => {
                problems.add(line, format!("key column `{k}` must be copied as a column"))
            }
            None => {}
        }
    }
    // the guard compares the target's copy of the version column
    if let Some(v) = &tj.version_column
        && source_col(v).is_some()
        && !select.iter().any(|s| matches!(&s.expr, SelectExpr::Column(c) if c == v))
    {
        problems.add(
            tj.line_of("version_column"),
            format!("version_column `{v}` must be copied as a column (it is excluded or replaced)"),
        );
    }
    if problems.0.len() > before {
        return Ok(None);
    }
    let key_types = key.iter().filter_map(|k| source_col(k).map(|c| c.ty.clone())).collect();
    let scan =
        ScanSpec { table: tj.source.clone(), select, key, key_types, filter: tj.filter.clone(), partition: None };
    let wanted = TableSchema { name: tj.target_name().to_string(), columns, primary_key: target_key };
    let estimated_rows = reader.estimate_rows(&tj.source).await?;
    if let Some(filter) = &tj.filter {
        // validates the filter on the source (read-only, reads one key)
        if let Err(e) = reader.key_after(&scan, None, 1).await {
            if e.is_transient() {
                return Err(e);
            }
            problems.add(
                tj.line_of("where"),
                format!("`where` of table `{}` is not valid on the source ({filter}): {e}", tj.source),
            );
            return Ok(None);
        }
    }
    Ok(Some(TablePlan { job: tj.clone(), source, scan, wanted, existing: None, key_positions, estimated_rows }))
}

/// An existing target table must have every mapped column with a compatible type,
/// no other NOT NULL column without a default, and the migration key as primary key.
fn check_existing(tp: &TablePlan, existing: &TableSchema, problems: &mut Problems) {
    let line = tp.job.line;
    let t = &existing.name;
    for c in &tp.wanted.columns {
        match existing.column(&c.name) {
            None => problems.add(line, format!("target table `{t}` exists but has no column `{}`", c.name)),
            Some(ec) if !compatible(&c.ty, &ec.ty) => problems.add(
                line,
                format!("target column `{t}.{}` is {} and cannot hold the source's {}", c.name, ec.native, c.ty),
            ),
            Some(_) => {}
        }
    }
    for ec in &existing.columns {
        if !ec.nullable && !ec.has_default && tp.wanted.column(&ec.name).is_none() {
            problems.add(
                line,
                format!("target column `{t}.{}` is NOT NULL without a default and nothing is copied into it", ec.name),
            );
        }
    }
    let mut want: Vec<&String> = tp.wanted.primary_key.iter().collect();
    let mut have: Vec<&String> = existing.primary_key.iter().collect();
    want.sort();
    have.sort();
    if want != have {
        problems.add(
            line,
            format!(
                "target table `{t}` has primary key ({}) but the migration key is ({})",
                existing.primary_key.join(", "),
                tp.wanted.primary_key.join(", ")
            ),
        );
    }
}

/// The schema writes use: the target's actual columns in the scan's output order,
/// keyed by the migration key.
pub fn write_schema(tp: &TablePlan, actual: &TableSchema) -> Result<TableSchema> {
    let columns = tp
        .wanted
        .columns
        .iter()
        .map(|c| {
            actual.column(&c.name).cloned().ok_or_else(|| {
                Error::schema(format!("target table has no column `{}`", c.name)).in_table(tp.target_name())
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TableSchema { name: actual.name.clone(), columns, primary_key: tp.wanted.primary_key.clone() })
}

/// What `plan` shows for one table.
#[derive(Debug, Clone, Serialize)]
pub struct PlanTableReport {
    pub table: String,
    pub target: String,
    pub target_exists: bool,
    pub key: Vec<String>,
    pub estimated_rows: u64,
    pub estimated_chunks: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_by: Option<String>,
    /// Number of partitions and the smallest ones (copied first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub first_partitions: Vec<(pontoon_core::Value, u64)>,
    pub columns: Vec<MappedColumn>,
}

/// Describes the plan for display, reading partition sizes from the source.
pub async fn report(
    plan: &Plan,
    job: &Job,
    source: &dyn Connector,
    target: &dyn Connector,
) -> Result<Vec<PlanTableReport>> {
    let mut reader = source.reader().await?;
    let mut out = Vec::new();
    for tp in &plan.tables {
        let (partitions, first_partitions) = match &tp.job.partition_by {
            Some(col) => {
                let ty = tp.source.column(col).map(|c| c.ty.clone()).unwrap_or(ColumnType::TEXT);
                let parts = reader.partitions(&tp.scan.table, col, &ty, tp.scan.filter.as_deref()).await?;
                (Some(parts.len() as u64), parts.into_iter().take(5).collect())
            }
            None => (None, Vec::new()),
        };
        out.push(PlanTableReport {
            table: tp.job.source.clone(),
            target: tp.target_name().to_string(),
            target_exists: tp.existing.is_some(),
            key: tp.scan.key.clone(),
            estimated_rows: tp.estimated_rows,
            estimated_chunks: tp.estimated_rows.div_ceil(job.copy.chunk_rows.max(1)).max(1),
            filter: tp.scan.filter.clone(),
            partition_by: tp.job.partition_by.clone(),
            partitions,
            first_partitions,
            columns: tp.mapping(target),
        });
    }
    Ok(out)
}
