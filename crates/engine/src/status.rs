//! What has been copied, per table and per partition, read from the state store
//! alone (no database connection needed).

use pontoon_core::{Result, Value};
use pontoon_state::StateStore;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub partition: Value,
    pub chunks: u64,
    pub chunks_done: u64,
    pub rows_estimate: u64,
    pub rows_copied: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    pub table: String,
    pub target: String,
    pub state: String,
    pub chunks: u64,
    pub chunks_done: u64,
    pub rows_estimate: u64,
    pub rows_copied: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Progress of every table the state store knows.
pub fn status(state: &StateStore) -> Result<Vec<TableStatus>> {
    let mut out = Vec::new();
    for t in state.tables()? {
        let parts = state.progress(&t.name)?;
        let sum = |f: fn(&pontoon_state::PartitionProgress) -> u64| parts.iter().map(f).sum::<u64>();
        let partitions = parts
            .iter()
            .filter_map(|p| {
                p.partition.clone().map(|partition| PartitionStatus {
                    partition,
                    chunks: p.chunks,
                    chunks_done: p.chunks_done,
                    rows_estimate: p.rows_estimate,
                    rows_copied: p.rows_copied,
                })
            })
            .collect();
        out.push(TableStatus {
            state: t.state.as_str().to_string(),
            chunks: sum(|p| p.chunks),
            chunks_done: sum(|p| p.chunks_done),
            rows_estimate: sum(|p| p.rows_estimate),
            rows_copied: sum(|p| p.rows_copied),
            partitions,
            error: t.error,
            table: t.name,
            target: t.target,
        });
    }
    Ok(out)
}
