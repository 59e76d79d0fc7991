//! The store: the source of truth for users, characters, conversations, groups and jobs.
//!
//! [`Store`] (in [`port`]) is what the API and the workers use; [`PgStore`] is its Postgres
//! adapter (the SQLite one lives in the `fastnpc-store-sqlite` crate). Each aggregate's module
//! holds its part of the port (a trait, such as [`characters::CharacterStore`]), its record
//! types, the Postgres queries — small named functions, checked against the schema at compile
//! time (`sqlx::query!`; the offline metadata lives in `.sqlx/`), taking any executor so a unit
//! of work decides what shares a transaction — and `PgStore`'s implementation of the trait.

pub mod api_keys;
pub mod avatars;
pub mod batch;
pub mod characters;
mod export;
pub mod groups;
pub mod jobs;
pub mod memories;
pub mod messages;
pub mod port;
pub mod postgres;
pub mod sources;
pub mod stats;
pub mod transfer;
pub mod usage;
pub mod users;

pub use port::*;
pub use postgres::PgStore;

/// The port's traits, which callers of an `Arc<dyn Store>` need in scope to call its methods:
/// `use fastnpc_shared::store::prelude::*`.
pub mod prelude {
    pub use super::{
        Store, api_keys::ApiKeyStore, avatars::AvatarStore, characters::CharacterStore, groups::GroupStore,
        jobs::ClaimStore, jobs::DeliveryStore, jobs::JobStore, memories::MemoryStore, messages::MessageStore,
        sources::SourceStore, stats::StatsStore, transfer::TransferStore, usage::UsageStore, users::AccountStore,
    };
}
