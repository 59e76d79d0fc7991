//! The Postgres store: the source of truth for users, characters and jobs.
//!
//! Queries are small named functions per aggregate, checked against the schema at compile time
//! (`sqlx::query!`; the offline metadata lives in `.sqlx/`). Functions take any executor, so the
//! caller decides what shares a transaction: the API writes a character and its job in one, and
//! the worker writes a profile and its job's terminal state in one.

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};

pub mod api_keys;
pub mod characters;
pub mod groups;
pub mod jobs;
pub mod memories;
pub mod messages;
pub mod stats;
pub mod users;

/// The schema, from the workspace's `migrations/` folder (its one source).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens the process's pool. `max_connections` bounds what one process can take from Postgres.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        // A request that cannot get a connection within this fails fast (503) rather than
        // queueing forever behind a database outage.
        .acquire_timeout(Duration::from_secs(5))
        .connect(database_url)
        .await
}

/// Applies pending migrations. sqlx serialises concurrent runs with an advisory lock, so every
/// replica may call this at start.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// True when `error` is a unique-constraint violation of `constraint`.
pub fn is_unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation() && db.constraint() == Some(constraint))
}
