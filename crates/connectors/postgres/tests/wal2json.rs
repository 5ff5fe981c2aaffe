//! Native change capture against a real PostgreSQL server (pontoon-testsupport),
//! decoding through wal2json. Every test captures with a job named after its own
//! database, so the slots of concurrent tests never meet, and drops its slot even
//! when it fails.

const PLUGIN: Plugin = Plugin::Wal2Json;

include!("native/cases.rs");
