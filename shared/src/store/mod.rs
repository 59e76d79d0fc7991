//! The store: the source of truth for users, characters, conversations, groups and jobs.
//!
//! [`Store`] (in [`port`]) is what the API and the workers use; [`PgStore`] is its Postgres
//! adapter (the SQLite one lives in the `fastnpc-store-sqlite` crate). The record types of the
//! port live in the per-aggregate modules beside the Postgres queries that fill them: small
//! named functions, checked against the schema at compile time (`sqlx::query!`; the offline
//! metadata lives in `.sqlx/`), taking any executor so [`PgStore`] decides what shares a
//! transaction.

pub mod api_keys;
pub mod characters;
mod export;
pub mod groups;
pub mod jobs;
pub mod memories;
pub mod messages;
pub mod port;
pub mod postgres;
pub mod stats;
pub mod transfer;
pub mod usage;
pub mod users;

pub use port::*;
pub use postgres::PgStore;
