//! `pontoon demo`: a sample shop on embedded SQLite (customers, orders, order items;
//! about a million rows) and a job that migrates it online into a new schema with
//! renamed, computed, excluded and filtered columns, while a live writer (the
//! shop's "application") inserts, updates and deletes. No server needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pontoon_core::{Column, ColumnType, Connector, Decimal, Result, Row, SecretUrl, TableSchema, Value};

/// Rows per table at scale 1.0.
pub const CUSTOMERS: u64 = 50_000;
pub const ORDERS: u64 = 250_000;
pub const ITEMS_PER_ORDER: u64 = 3;

/// The job file the demo runs (paths relative to the demo directory).
pub const JOB: &str = r#"# pontoon demo: copy the shop into a new schema
[source]
url = "sqlite:shop.db"

[target]
url = "sqlite:shop_v2.db"

[copy]
workers = 2
chunk_rows = 20000

[sync]
capture = "triggers"                 # SQLite has no change log of its own
name = "demo"

[verify]
changes = 0.2                        # a fifth of the synced keys are compared right after they are applied

[[tables]]
source = "customers"
partition_by = "country"             # progress per tenant, smallest first
[tables.columns]
email_address = "email"              # a rename
country_code = { sql = "upper(country)", type = "text" }

[[tables]]
source = "orders"
target = "orders_v2"
where = "status <> 'draft'"          # drafts are not migrated
exclude = ["note"]
[tables.columns]
order_status = "status"
amount_cents = { sql = "CAST(round(amount * 100) AS INTEGER)", type = "bigint" }

[[tables]]
source = "order_items"               # composite key (order_id, line_no)
"#;

/// A small deterministic generator (xorshift), so every demo shop is the same.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An amount of money with two decimal places, from cents (always positive here).
fn money(cents: i64) -> Value {
    Value::Decimal(Decimal::parse(&format!("{}.{:02}", cents / 100, cents % 100)).unwrap_or(Decimal::from_i128(0)))
}

fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
    Column { name: name.into(), ty, nullable, native: String::new(), has_default: false }
}

const COUNTRIES: [&str; 12] = ["de", "fr", "us", "jp", "br", "in", "ng", "se", "es", "it", "kr", "mx"];
const STATUSES: [&str; 4] = ["draft", "paid", "shipped", "cancelled"];
const BASE_TS: i64 = 1_700_000_000_000_000;

/// Builds the sample shop in `dir/shop.db` (replacing it) with `scale` times the
/// default row counts. Returns the number of rows written.
pub async fn build_shop(dir: &Path, scale: f64) -> Result<u64> {
    let path = dir.join("shop.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let conn = pontoon_sqlite::SqliteConnector::new(&SecretUrl::new("sqlite:shop.db"), dir)?;
    let mut w = conn.writer().await?;
    let n_customers = ((CUSTOMERS as f64 * scale) as u64).max(10);
    let n_orders = ((ORDERS as f64 * scale) as u64).max(10);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    let customers = TableSchema {
        name: "customers".into(),
        columns: vec![
            col("id", ColumnType::I64, false),
            col("name", ColumnType::Text { max_chars: Some(100) }, false),
            col("email", ColumnType::TEXT, true),
            col("country", ColumnType::Text { max_chars: Some(2) }, false),
            col("created_at", ColumnType::Timestamp, false),
        ],
        primary_key: vec!["id".into()],
    };
    let orders = TableSchema {
        name: "orders".into(),
        columns: vec![
            col("id", ColumnType::I64, false),
            col("customer_id", ColumnType::I64, false),
            col("status", ColumnType::Text { max_chars: Some(16) }, false),
            col("amount", ColumnType::Decimal { precision: Some(12), scale: Some(2) }, false),
            col("created_at", ColumnType::Timestamp, false),
            col("note", ColumnType::TEXT, true),
        ],
        primary_key: vec!["id".into()],
    };
    let items = TableSchema {
        name: "order_items".into(),
        columns: vec![
            col("order_id", ColumnType::I64, false),
            col("line_no", ColumnType::I32, false),
            col("sku", ColumnType::Text { max_chars: Some(32) }, false),
            col("qty", ColumnType::I32, false),
            col("unit_price", ColumnType::Decimal { precision: Some(10), scale: Some(2) }, false),
        ],
        primary_key: vec!["order_id".into(), "line_no".into()],
    };
    for t in [&customers, &orders, &items] {
        w.create_table(t).await?;
    }

    let mut total = 0;
    let mut batch: Vec<Row> = Vec::with_capacity(10_000);
    for id in 1..=n_customers as i64 {
        let country =
            COUNTRIES[(rng.below(1000) as usize * rng.below(1000) as usize / 90_000).min(COUNTRIES.len() - 1)];
        batch.push(vec![
            Value::Int(id),
            Value::Text(format!("Customer {id} ✓")),
            if id % 17 == 0 { Value::Null } else { Value::Text(format!("c{id}@example.com")) },
            Value::Text(country.into()),
            Value::Timestamp(BASE_TS + rng.below(31_536_000_000_000) as i64),
        ]);
        if batch.len() == 10_000 {
            total += w.upsert(&customers, &std::mem::take(&mut batch)).await?;
        }
    }
    total += w.upsert(&customers, &std::mem::take(&mut batch)).await?;

    let mut item_batch: Vec<Row> = Vec::with_capacity(10_000);
    for id in 1..=n_orders as i64 {
        let cents = 100 + rng.below(99_900) as i64;
        batch.push(vec![
            Value::Int(id),
            Value::Int(1 + rng.below(n_customers) as i64),
            Value::Text(STATUSES[rng.below(4) as usize].into()),
            money(cents),
            Value::Timestamp(BASE_TS + rng.below(31_536_000_000_000) as i64),
            if id % 5 == 0 { Value::Text("gift wrap".into()) } else { Value::Null },
        ]);
        for line in 1..=ITEMS_PER_ORDER as i64 {
            let price = 50 + rng.below(20_000) as i64;
            item_batch.push(vec![
                Value::Int(id),
                Value::Int(line),
                Value::Text(format!("SKU-{:05}", rng.below(20_000))),
                Value::Int(1 + rng.below(5) as i64),
                money(price),
            ]);
        }
        if batch.len() == 10_000 {
            total += w.upsert(&orders, &std::mem::take(&mut batch)).await?;
            total += w.upsert(&items, &std::mem::take(&mut item_batch)).await?;
        }
    }
    total += w.upsert(&orders, &batch).await?;
    total += w.upsert(&items, &item_batch).await?;
    Ok(total)
}

/// What the live writer did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct WriterStats {
    pub transactions: u64,
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
}

/// The shop's application while the demo migrates it: small transactions of
/// inserts, updates and deletes (orders moving in and out of the job's `where`
/// filter, customers moving between partitions), a few hundred a second.
#[derive(Debug)]
pub struct LiveWriter {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Result<WriterStats>>,
}

impl LiveWriter {
    pub fn start(dir: &Path) -> LiveWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let path = dir.join("shop.db");
        let flag = stop.clone();
        let handle = std::thread::spawn(move || live_writes(&path, &flag));
        LiveWriter { stop, handle }
    }

    /// Stops after the transaction in hand; everything it wrote is committed.
    pub fn stop(self) -> Result<WriterStats> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().map_err(|_| pontoon_core::Error::internal("the demo's writer panicked"))?
    }
}

fn sqlite_err(e: rusqlite::Error) -> pontoon_core::Error {
    pontoon_core::Error::new(pontoon_core::ErrorKind::Database, "the demo's writer failed").with_source(e)
}

fn live_writes(path: &PathBuf, stop: &AtomicBool) -> Result<WriterStats> {
    let mut c = rusqlite::Connection::open(path).map_err(sqlite_err)?;
    c.busy_timeout(Duration::from_secs(30)).map_err(sqlite_err)?;
    let (max_order, customers): (i64, i64) = c
        .query_row("SELECT (SELECT max(id) FROM orders), (SELECT max(id) FROM customers)", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(sqlite_err)?;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut next_order = max_order + 1;
    let mut st = WriterStats::default();
    while !stop.load(Ordering::Relaxed) {
        let tx = c.transaction().map_err(sqlite_err)?;
        let order = 1 + rng.below(next_order as u64) as i64;
        let customer = 1 + rng.below(customers as u64) as i64;
        match rng.below(6) {
            0 | 1 => {
                let id = next_order;
                next_order += 1;
                let status = STATUSES[rng.below(4) as usize];
                tx.execute(
                    "INSERT INTO orders (id, customer_id, status, amount, created_at, note)
                     VALUES (?1, ?2, ?3, ?4, strftime('%Y-%m-%d %H:%M:%S', 'now') || '.000000', NULL)",
                    rusqlite::params![id, customer, status, format!("{}.{:02}", rng.below(999), rng.below(100))],
                )
                .map_err(sqlite_err)?;
                for line in 1..=1 + rng.below(3) as i64 {
                    tx.execute(
                        "INSERT INTO order_items (order_id, line_no, sku, qty, unit_price) VALUES (?1, ?2, ?3, ?4, '9.99')",
                        rusqlite::params![id, line, format!("SKU-{:05}", rng.below(20_000)), 1 + rng.below(5) as i64],
                    )
                    .map_err(sqlite_err)?;
                    st.inserts += 1;
                }
                st.inserts += 1;
            }
            2 => {
                // in and out of the job's filter (drafts are not migrated)
                let status = STATUSES[rng.below(4) as usize];
                let n = tx
                    .execute("UPDATE orders SET status = ?2 WHERE id = ?1", rusqlite::params![order, status])
                    .map_err(sqlite_err)?;
                st.updates += n as u64;
            }
            3 => {
                let n = tx
                    .execute(
                        "UPDATE order_items SET qty = qty + 1 WHERE order_id = ?1 AND line_no = 1",
                        rusqlite::params![order],
                    )
                    .map_err(sqlite_err)?;
                st.updates += n as u64;
            }
            4 => {
                // to another partition (country), and a new email
                let country = COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize];
                let n = tx
                    .execute(
                        "UPDATE customers SET country = ?2, email = 'moved' || id || '@example.com' WHERE id = ?1",
                        rusqlite::params![customer, country],
                    )
                    .map_err(sqlite_err)?;
                st.updates += n as u64;
            }
            _ => {
                let n = tx.execute("DELETE FROM order_items WHERE order_id = ?1", [order]).map_err(sqlite_err)?
                    + tx.execute("DELETE FROM orders WHERE id = ?1", [order]).map_err(sqlite_err)?;
                st.deletes += n as u64;
            }
        }
        tx.commit().map_err(sqlite_err)?;
        st.transactions += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(st)
}

/// One table of the demo compared across the two databases.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableComparison {
    pub table: String,
    /// Rows the source has through the job's filter.
    pub source_rows: u64,
    pub target_rows: u64,
    /// Rows present on one side only, or different, through the mapping.
    pub differences: u64,
}

/// Compares the shop and the migrated shop through the demo job's mapping, with SQL
/// of its own (`EXCEPT` both ways over an attached database), not pontoon's code.
pub fn compare(dir: &Path) -> Result<Vec<TableComparison>> {
    let c = rusqlite::Connection::open(dir.join("shop_v2.db")).map_err(sqlite_err)?;
    c.busy_timeout(Duration::from_secs(30)).map_err(sqlite_err)?;
    let src = dir.join("shop.db");
    c.execute("ATTACH DATABASE ?1 AS src", [src.to_string_lossy()]).map_err(sqlite_err)?;
    let tables = [
        (
            "customers",
            "SELECT id, name, email, country, upper(country), created_at FROM src.customers",
            "SELECT id, name, email_address, country, country_code, created_at FROM main.customers",
        ),
        (
            "orders_v2",
            "SELECT id, customer_id, status, amount, CAST(round(amount * 100) AS INTEGER), created_at
             FROM src.orders WHERE status <> 'draft'",
            "SELECT id, customer_id, order_status, amount, amount_cents, created_at FROM main.orders_v2",
        ),
        (
            "order_items",
            "SELECT order_id, line_no, sku, qty, unit_price FROM src.order_items",
            "SELECT order_id, line_no, sku, qty, unit_price FROM main.order_items",
        ),
    ];
    let count = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|n| n as u64).map_err(sqlite_err);
    tables
        .iter()
        .map(|(name, source, target)| {
            Ok(TableComparison {
                table: name.to_string(),
                source_rows: count(&format!("SELECT count(*) FROM ({source})"))?,
                target_rows: count(&format!("SELECT count(*) FROM ({target})"))?,
                differences: count(&format!("SELECT count(*) FROM ({source} EXCEPT {target})"))?
                    + count(&format!("SELECT count(*) FROM ({target} EXCEPT {source})"))?,
            })
        })
        .collect()
}
