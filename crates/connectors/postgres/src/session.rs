//! One connection, set up the way every pontoon session needs it.

use pontoon_core::Result;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

use crate::errors::{connect_error, pg_error};

/// Settings of every session: timestamps in UTC, ISO dates, floats printed with
/// round-trip precision (for anything read as text), backslashes in literals taken
/// literally.
const SETUP: &str = "SET TIME ZONE 'UTC'; SET extra_float_digits = 3; SET DateStyle = ISO; \
                     SET standard_conforming_strings = on; SET client_encoding = 'UTF8'";

/// A connection whose driver task runs on the tokio runtime until the client is
/// dropped.
pub(crate) struct Session {
    pub client: Client,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("closed", &self.client.is_closed()).finish()
    }
}

fn host_of(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => String::from("localhost"),
    };
    match config.get_ports().first() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

impl Session {
    /// Connects (without TLS) and applies the session settings. `target` is the URL
    /// without its password, for messages.
    pub async fn connect(config: &Config, target: &str) -> Result<Session> {
        let user = config.get_user().unwrap_or_default();
        let (client, connection) =
            config.connect(NoTls).await.map_err(|e| connect_error(e, user, &host_of(config), target))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "postgresql connection ended with an error");
            }
        });
        client.batch_execute(SETUP).await.map_err(|e| pg_error(e, "setting up the session"))?;
        Ok(Session { client })
    }
}
