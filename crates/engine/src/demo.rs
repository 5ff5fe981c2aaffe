//! `pontoon demo`: a sample shop on embedded SQLite (customers, orders, order items;
//! about a million rows) and a job that copies it into a new schema with renamed,
//! computed, excluded and filtered columns. No server needed.

use std::path::Path;

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
