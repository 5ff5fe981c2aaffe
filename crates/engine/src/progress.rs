//! Live progress counters, written by the copier and read by whoever displays them
//! (the CLI's bars or lines, later the HTTP API). Lock-free: plain atomics.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug)]
pub struct TableProgress {
    pub name: String,
    pub target: String,
    pub rows_estimate: AtomicU64,
    pub rows_done: AtomicU64,
    pub chunks_total: AtomicU64,
    pub chunks_done: AtomicU64,
    phase: AtomicU8,
}

/// Where a table's copy stands, as shown to the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Waiting,
    Planning,
    Copying,
    Done,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Planning => "planning",
            Phase::Copying => "copying",
            Phase::Done => "done",
            Phase::Failed => "failed",
        }
    }
}

impl TableProgress {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            1 => Phase::Planning,
            2 => Phase::Copying,
            3 => Phase::Done,
            4 => Phase::Failed,
            _ => Phase::Waiting,
        }
    }

    pub fn set_phase(&self, p: Phase) {
        let v = match p {
            Phase::Waiting => 0,
            Phase::Planning => 1,
            Phase::Copying => 2,
            Phase::Done => 3,
            Phase::Failed => 4,
        };
        self.phase.store(v, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct Progress {
    pub started: Instant,
    pub tables: Vec<TableProgress>,
}

impl Progress {
    pub fn new(tables: impl IntoIterator<Item = (String, String, u64)>) -> Progress {
        Progress {
            started: Instant::now(),
            tables: tables
                .into_iter()
                .map(|(name, target, est)| TableProgress {
                    name,
                    target,
                    rows_estimate: AtomicU64::new(est),
                    rows_done: AtomicU64::new(0),
                    chunks_total: AtomicU64::new(0),
                    chunks_done: AtomicU64::new(0),
                    phase: AtomicU8::new(0),
                })
                .collect(),
        }
    }

    pub fn rows_done(&self) -> u64 {
        self.tables.iter().map(|t| t.rows_done.load(Ordering::Relaxed)).sum()
    }
}
