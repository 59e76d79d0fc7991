//! The SQLite store: embedded mode's stand-in for the Postgres store in
//! `fastnpc_shared::store`, for running everything in one process over one database file.
//!
//! Every module mirrors the Postgres module of the same name: the same function names,
//! parameters (but the executor), record types (reused from `fastnpc_shared::store`) and
//! semantics, so both can sit behind one store interface. Where SQLite forces a different way to
//! the same contract, the module says so. The differences that run through all of them:
//!
//! - **One writer at a time.** SQLite has no row locks (`for update`, `skip locked`): a write
//!   transaction locks the whole database. Single-statement writes are atomic on their own (the
//!   write lock is taken before the statement reads anything); multi-statement writes begin with
//!   `BEGIN IMMEDIATE` ([`begin_immediate`]) so they take the write lock before their first read.
//!   A deferred `BEGIN` that reads and then writes can fail with `SQLITE_BUSY` when another
//!   connection wrote in between, and the busy timeout cannot help there.
//! - **Time comes from Rust.** Timestamps are text in the format sqlx writes for
//!   `DateTime<Utc>`, compared as text; `now()` and interval arithmetic are computed in Rust
//!   ([`now`], [`plus`], [`minus`]) and bound, so every stored and compared value has one encoding.
//! - **No arrays.** `= any($1)` becomes `in (select unhex(value) from json_each(?))` with the ids
//!   bound as one JSON array of hex strings ([`id_list`]).
//!
//! Queries are checked at compile time like the Postgres ones; their offline data is in this
//! crate's own `.sqlx/` (regenerate with `scripts/sqlx-prepare-sqlite`).

use std::{path::Path, time::Duration};

use chrono::{DateTime, SubsecRound, TimeDelta, TimeZone, Utc};
use sqlx::{
    Sqlite, SqlitePool, Transaction,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub mod api_keys;
pub mod avatars;
pub mod characters;
mod event_log;
pub mod events;
mod export;
pub mod groups;
pub mod jobs;
pub mod memories;
pub mod messages;
pub mod sources;
pub mod stats;
mod store;
pub mod usage;
pub mod users;

pub use event_log::SqliteEventLog;
pub use store::SqliteStore;

#[cfg(test)]
mod tests;

/// The schema: this crate's `migrations/`, a translation of the workspace's Postgres migrations
/// plus the job event log.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens (creating if needed) the database file at `path`.
pub async fn connect(path: &Path, max_connections: u32) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // Readers never block the writer nor each other; only writers queue.
        .journal_mode(SqliteJournalMode::Wal)
        // In WAL mode NORMAL cannot corrupt the database; a power cut may lose the last commits.
        .synchronous(SqliteSynchronous::Normal)
        // Off by default in SQLite, per connection: every `on delete cascade` depends on it.
        .foreign_keys(true)
        // Writers wait for each other this long before failing with SQLITE_BUSY.
        .busy_timeout(Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        // As with Postgres: fail fast (503) rather than queue forever.
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
}

/// Applies pending migrations.
pub async fn migrate(pool: &SqlitePool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Begins a write transaction that holds the database's write lock from its first statement.
/// Use it for every transaction that may write (where the Postgres callers use `pool.begin()`):
/// reads inside it see the state the writes will apply to, as `for update` guarantees in
/// Postgres, and it cannot fail half-way with `SQLITE_BUSY` as a deferred transaction can.
pub async fn begin_immediate(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

/// SQLite's text after "UNIQUE constraint failed: " for each unique index the code handles,
/// by the name the Postgres constraint has. SQLite reports no constraint name, only the indexed
/// columns (or "index 'name'" for an expression index).
const UNIQUE_CONSTRAINTS: &[(&str, &str)] = &[
    (fastnpc_shared::store::users::USERNAME_KEY, "users.username_lower"),
    (fastnpc_shared::store::jobs::IDEMPOTENCY_KEY, "jobs.user_id, jobs.idempotency_key"),
    ("messages_job_id_key", "messages.job_id"),
    ("messages_reply_to_key", "messages.reply_to"),
    ("group_messages_job_id_round_key", "group_messages.job_id, group_messages.round"),
    ("api_keys_key_hash_key", "api_keys.key_hash"),
];

/// True when `error` is a unique-constraint violation of `constraint`, named as in Postgres
/// (`users::USERNAME_KEY`, `jobs::IDEMPOTENCY_KEY`, ...), so callers keep one vocabulary.
pub fn is_unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    let sqlx::Error::Database(db) = error else { return false };
    let Some(columns) = db.message().strip_prefix("UNIQUE constraint failed: ") else { return false };
    db.is_unique_violation() && UNIQUE_CONSTRAINTS.iter().any(|&(name, cols)| name == constraint && cols == columns)
}

/// The current time, at Postgres' precision (microseconds), so a value read back equals the one
/// written in both stores.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

// Bounds keep every computed time a four-digit year: RFC 3339 text outside them (a sign, a
// fifth digit) would no longer sort as text in time order.
fn earliest() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn latest() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single().unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `time + duration`, as Postgres' `now() + make_interval(secs => ...)`; saturates.
pub fn plus(time: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(duration)
        .ok()
        .and_then(|delta| time.checked_add_signed(delta))
        .map_or_else(latest, |t| t.min(latest()))
        .trunc_subsecs(6)
}

/// `time - duration`; saturates.
pub fn minus(time: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(duration)
        .ok()
        .and_then(|delta| time.checked_sub_signed(delta))
        .map_or_else(earliest, |t| t.max(earliest()))
        .trunc_subsecs(6)
}

/// Ids as the JSON array of hex strings that `in (select unhex(value) from json_each(?))`
/// turns back into the 16-byte blobs the id columns hold.
pub(crate) fn id_list(ids: impl IntoIterator<Item = uuid::Uuid>) -> String {
    let hex: Vec<String> = ids.into_iter().map(id_hex).collect();
    serde_json::Value::from(hex).to_string()
}

/// An id as the hex text `unhex()` turns back into the 16-byte blob the id columns hold.
pub(crate) fn id_hex(id: uuid::Uuid) -> String {
    id.simple().to_string()
}

/// A time as the text sqlx writes for a `DateTime<Utc>` (see the crate docs), for a time passed
/// inside a statement's JSON rather than bound.
pub(crate) fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// Byte strings as the JSON array of hex strings that `in (select unhex(value) from json_each(?))`
/// turns back into blobs (see [`id_list`]).
pub(crate) fn hex_list<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> String {
    let hex: Vec<String> = values.into_iter().map(hex).collect();
    serde_json::Value::from(hex).to_string()
}

/// `bytes` as the hex text `unhex()` reads.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `value` as JSON text, for a statement that reads a round's rows with `json_each`.
pub(crate) fn json_text(value: &impl serde::Serialize) -> Result<String, sqlx::Error> {
    serde_json::to_string(value).map_err(|error| sqlx::Error::Encode(error.into()))
}
