//! MariaDB native change capture from the row binlog.
//!
//! A placeholder so that the crate compiles and `Connector::capture` can dispatch the
//! `native` mode here; the binlog reader replaces it.

use std::time::Duration;

use async_trait::async_trait;
use pontoon_core::capture::{Backlog, Capture, CaptureBatch, CaptureSpec, CaptureTable};
use pontoon_core::{Error, ErrorKind, Position, Result};

use crate::MysqlConnector;

/// Native (binlog) capture of one job on one MariaDB database.
#[derive(Debug)]
pub struct BinlogCapture {
    job: String,
}

impl BinlogCapture {
    /// Creating it does no I/O.
    pub fn new(connector: MysqlConnector, spec: CaptureSpec) -> BinlogCapture {
        let _ = connector;
        BinlogCapture { job: spec.job }
    }

    fn unsupported(&self) -> Error {
        Error::new(ErrorKind::Unsupported, format!("MariaDB binlog capture (job {}) is not built yet", self.job))
    }
}

#[async_trait]
impl Capture for BinlogCapture {
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

    async fn backlog(&mut self, _from: &Position) -> Result<Backlog> {
        Err(self.unsupported())
    }

    async fn cleanup(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}
