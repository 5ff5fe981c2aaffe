//! pontoon-engine: the migration logic, independent of any particular engine.
//!
//! Concepts: a [`job::Job`] is the validated job file; [`plan::plan`] introspects both
//! sides and turns it into a [`plan::Plan`] (what each table reads and writes);
//! [`copy::copy`] runs the chunked, resumable copy against the state store
//! ([`pontoon_state::StateStore`]); [`progress::Progress`] is what a display reads.
//! The engine reaches databases only through the traits of `pontoon-core`;
//! [`connect::connector`] is the one place that names the engine crates.

pub mod alert;
pub mod connect;
pub mod copy;
pub mod demo;
pub mod job;
pub mod plan;
pub mod progress;
pub mod retry;
pub mod run;
pub mod status;
pub mod sync;
pub mod throttle;
pub mod track;
pub mod verify;

pub use pontoon_core as core;
pub use pontoon_state as state;
