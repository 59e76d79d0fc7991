//! The shared core of FastNPC: everything the API and the worker must agree on.
//!
//! The API accepts work and streams progress; the worker does the LLM work. They never call each
//! other: they meet in Postgres (rows), RabbitMQ (job ids) and Redis (events). This crate owns the
//! vocabulary of those meeting points, so a change to a job or event schema is one change here,
//! checked by the compiler on both sides.
//!
//! # Layout
//!
//! - [`ids`]: newtype ids (UUIDv7), so a `JobId` cannot be passed where a `CharacterId` is meant.
//! - [`settings`]: typed settings from environment variables (names fixed by ARCHITECTURE.md).
//! - [`telemetry`]: tracing set-up shared by both binaries.
//! - [`domain`]: the persona profile's categories and the character source.
//! - [`prompts`]: every prompt template, one module per language.
//! - [`jobs`]: job kinds, states, errors and the versioned queue message.
//! - [`events`]: the per-job event log that SSE clients read.
//! - Ports and adapters: [`store`] (Postgres via sqlx), [`queue`] (RabbitMQ via lapin),
//!   [`event_bus`] (Redis pub/sub + streams), [`llm`] (any OpenAI-compatible endpoint).
//! - [`control`]: API → worker signals (cancel a running job).
//! - [`dispatch`]: handing committed jobs to the queue (event, publish, confirm).
//! - [`rate_limit`]: login back-off and submission limits shared by all API replicas.
//! - [`stream_tokens`]: short-lived single-job tokens for browsers' `EventSource`.
//! - [`embedded`]: in-process stand-ins for RabbitMQ and Redis, for running the API and the
//!   workers as one process over SQLite alone (`fastnpc serve`, with `fastnpc-store-sqlite`).
//! - [`shutdown`]: the SIGINT/SIGTERM future both binaries stop on.

pub mod backoff;
pub mod control;
pub mod dispatch;
pub mod domain;
pub mod embedded;
pub mod event_bus;
pub mod events;
pub mod ids;
pub mod jobs;
pub mod llm;
pub mod metrics;
pub mod prompts;
pub mod queue;
pub mod rate_limit;
pub mod settings;
pub mod shutdown;
pub mod sources;
pub mod store;
pub mod stream_tokens;
pub mod telemetry;
