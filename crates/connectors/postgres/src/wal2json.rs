//! PostgreSQL native change capture through a logical replication slot decoded by
//! wal2json. Placeholder: every call reports that the mode is not built yet.

use std::time::Duration;

use async_trait::async_trait;
use pontoon_core::capture::{Capture, CaptureBatch, CaptureTable};
use pontoon_core::{Error, ErrorKind, Position, Result};

use crate::PgConnector;

/// Native capture of one job (slot `pontoon_<job>`).
#[derive(Debug)]
pub struct Wal2JsonCapture {
    job: String,
}

impl Wal2JsonCapture {
    /// Creating it does no I/O.
    pub fn new(connector: PgConnector, job: String) -> Wal2JsonCapture {
        let _ = connector;
        Wal2JsonCapture { job }
    }

    fn unsupported(&self) -> Error {
        Error::new(ErrorKind::Unsupported, format!("PostgreSQL native capture (job {}) is not built yet", self.job))
    }
}

#[async_trait]
impl Capture for Wal2JsonCapture {
    async fn preflight(&mut self, _tables: &[CaptureTable], _copy_seconds: u64) -> Result<()> {
        Err(self.unsupported())
    }

    async fn start(&mut self, _tables: &[CaptureTable]) -> Result<Position> {
        Err(self.unsupported())
    }

    async fn read(&mut self, _from: &Position, _max_events: usize, _wait: Duration) -> Result<CaptureBatch> {
        Err(self.unsupported())
    }

    async fn release(&mut self, _upto: &Position) -> Result<()> {
        Err(self.unsupported())
    }

    async fn cleanup(&mut self) -> Result<Vec<String>> {
        Err(self.unsupported())
    }
}
