//! pontoon-core: the domain of a migration without any database driver.
//!
//! Concepts: a [`Value`] is one cell in portable form; a [`TableSchema`] describes a
//! table with portable [`ColumnType`]s; a [`ScanSpec`] with a [`KeyRange`] says which
//! rows to read; [`convert::fit`] decides whether a target column can hold a value;
//! the [`Connector`], [`Reader`] and [`Writer`] traits are what each engine crate
//! implements. Errors carry an [`ErrorKind`] that drives the retry policy and a
//! location (table, key, column) for the operator.

pub mod capture;
pub mod connector;
pub mod convert;
pub mod digest;
pub mod error;
pub mod position;
pub mod scan;
pub mod schema;
pub mod value;

pub use connector::{Checksum, Connector, RawRows, Reader, SecretUrl, Writer};
pub use convert::Limits;
pub use digest::Digest;
pub use error::{Error, ErrorKind, Result, redact_url};
pub use position::Position;
pub use scan::{KeyRange, PartitionFilter, Row, ScanSpec, SelectExpr, SelectItem};
pub use schema::{Column, ColumnType, Engine, TableSchema};
pub use value::{Decimal, Value};
