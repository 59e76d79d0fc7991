//! The store port: everything the API and the workers ask of the database.
//!
//! It is split by aggregate — [`AccountStore`], [`ApiKeyStore`], [`CharacterStore`],
//! [`MessageStore`], [`MemoryStore`], [`GroupStore`], [`JobStore`], [`DeliveryStore`],
//! [`ClaimStore`], [`UsageStore`], [`StatsStore`], [`TransferStore`], [`AvatarStore`] — each
//! trait in the module of its aggregate, beside the Postgres queries that implement it; [`Store`] is all of them
//! (plus a readiness ping), and this module holds the types several of them share.
//!
//! Two adapters implement it: Postgres ([`super::postgres::PgStore`], the distributed mode) and
//! SQLite (crate `fastnpc-store-sqlite`, the embedded mode). Handlers and jobs hold an
//! `Arc<dyn Store>` chosen once at start-up, so no code outside the adapters knows which
//! database it talks to.
//!
//! Transactions do not cross the port. Where the API or a job needs several writes to happen
//! together (a character and its job; a reply and its job's success), the port offers that unit
//! of work as one method, and the adapter runs it in one transaction. Every method that ends or
//! advances a job takes the worker's [`Claim`](super::jobs::Claim) and is refused (returns
//! `false` / `None`) when the claim was lost, exactly as the single statements are.
//!
//! Errors stay `sqlx::Error` — both adapters are sqlx — so the API's mapping of database
//! failures to 503/500 holds for either. Outcomes a caller must tell apart (a taken username,
//! a reused idempotency key, a stale memory version) are values, not errors.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{
    characters::CharacterRecord, jobs::NewJob, memories::MemoryEntry, messages::MessageRecord, prelude::*,
    stats::Totals,
};
use crate::ids::{CharacterId, GroupId, MessageId, UserId};

pub type StoreResult<T> = Result<T, sqlx::Error>;

/// True when another attempt may succeed where this one failed: the database could not be
/// reached, was shutting down or overloaded, or the statement lost a race (a deadlock, a
/// serialization failure, a lock timeout). Both sides map it the same way: the API answers 503,
/// the worker retries the job. Any other error would fail again.
pub fn is_transient(error: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match error {
        E::Io(_) | E::Tls(_) | E::Protocol(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::BeginFailed => {
            true
        }
        E::Database(db) => db.code().is_some_and(|code| is_transient_database_code(&code)),
        _ => false,
    }
}

/// True for a database error code that another attempt may not meet: a serialization failure
/// or deadlock, a lock or statement timeout, a connection lost or refused, a server shutting
/// down or overloaded (Postgres SQLSTATE, always five characters), or SQLite's `BUSY` and
/// `LOCKED` (a decimal result code, extended codes carrying the primary one in the low byte).
pub fn is_transient_database_code(code: &str) -> bool {
    if code.len() == 5 {
        return matches!(code, "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03" | "53300")
            || code.starts_with("08");
    }
    const SQLITE_BUSY: u32 = 5;
    const SQLITE_LOCKED: u32 = 6;
    code.parse::<u32>().is_ok_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}

/// How a job-creating write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Submitted {
    /// The rows and the job were written.
    Created,
    /// Nothing was written: another request of this user already used the `Idempotency-Key`
    /// (it won a race the caller's lookup could not see).
    IdempotencyKeyTaken,
    /// Nothing was written: it would have taken the user past this cap of their [`Quota`].
    OverQuota(Capped),
    /// `submit_guarded`: its [`JobGuard`] no longer holds; `submit_message`: the character is
    /// not the user's, or not ready. Nothing was written.
    GuardFailed,
}

/// What one user may hold at once. The store checks a submission against it inside the
/// transaction that writes it, after taking a per-user lock (Postgres: the user's row; SQLite:
/// the write lock every unit of work takes), so concurrent requests cannot together overshoot
/// a cap that each of them, checked alone, would respect.
#[derive(Clone, Copy, Debug)]
pub struct Quota {
    /// Jobs queued or running.
    pub active_jobs: i64,
    pub characters: i64,
    pub groups: i64,
}

/// One cap of a [`Quota`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capped {
    ActiveJobs,
    Characters,
    Groups,
}

impl Quota {
    pub fn limit(&self, cap: Capped) -> i64 {
        match cap {
            Capped::ActiveJobs => self.active_jobs,
            Capped::Characters => self.characters,
            Capped::Groups => self.groups,
        }
    }

    /// The first of `counts` (what the user holds, the new rows included) past its cap.
    pub fn exceeded(&self, counts: &[(Capped, i64)]) -> Option<Capped> {
        counts.iter().find(|(cap, count)| *count > self.limit(*cap)).map(|(cap, _)| *cap)
    }
}

/// A new character, generated by its job.
pub struct NewCharacter<'a> {
    pub character_id: CharacterId,
    pub user_id: UserId,
    pub name: &'a str,
    /// The source as stored (`CharacterSource` serialised).
    pub source: &'a Value,
    /// `zh` or `en`: the language the profile is written in and the character speaks.
    pub language: &'a str,
    /// Stamped by the submitter, like a message's: the stored row is then known without reading
    /// it back (the 202 of `POST /v1/characters` shows it).
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl<'a> NewCharacter<'a> {
    pub fn new(
        character_id: CharacterId,
        user_id: UserId,
        name: &'a str,
        source: &'a Value,
        language: &'a str,
    ) -> Self {
        Self { character_id, user_id, name, source, language, created_at: stamp() }
    }

    /// The row a successful `submit_character` stored: generating, nothing written yet.
    pub fn record(&self) -> CharacterRecord {
        CharacterRecord {
            character_id: self.character_id,
            user_id: self.user_id,
            name: self.name.to_owned(),
            status: "generating".to_owned(),
            source: self.source.clone(),
            profile: None,
            brief: None,
            language: self.language.to_owned(),
            prompt_version: None,
            source_snapshot: None,
            version: 0,
            avatar_etag: None,
            created_at: self.created_at,
            updated_at: self.created_at,
        }
    }
}

/// The current time as a row's `created_at`: to the microsecond, which both stores keep, so a
/// row stamped by its writer equals the row read back.
pub fn stamp() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound as _;
    chrono::Utc::now().trunc_subsecs(6)
}

/// A user's chat message, answered by its job.
pub struct NewUserMessage<'a> {
    pub message_id: MessageId,
    pub user_id: UserId,
    pub character_id: CharacterId,
    pub content: &'a str,
    /// Stamped by the submitter, whose clock already orders the conversation (the message id
    /// is a UUIDv7), to the microsecond both stores keep: the stored row is then known without
    /// reading it back.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl<'a> NewUserMessage<'a> {
    pub fn new(message_id: MessageId, user_id: UserId, character_id: CharacterId, content: &'a str) -> Self {
        Self { message_id, user_id, character_id, content, created_at: stamp() }
    }

    /// The row a successful submission stored.
    pub fn record(&self) -> MessageRecord {
        MessageRecord {
            message_id: self.message_id,
            character_id: self.character_id,
            author: "user".to_owned(),
            content: self.content.to_owned(),
            compressed: false,
            job_id: None,
            reply_to: None,
            prompt_snapshot: None,
            truncated: false,
            prompt_version: None,
            created_at: self.created_at,
        }
    }
}

/// A new job, owned: what a submission waiting for its round of a group commit
/// (`batch::Keyed`) keeps of its [`NewJob`], since it outlives the request that borrowed it.
pub struct QueuedJob {
    pub job_id: crate::ids::JobId,
    pub kind: crate::jobs::JobKind,
    pub group_id: Option<GroupId>,
    pub serial_key: Option<String>,
    pub progress_total: i32,
    pub idempotency: Option<(String, Vec<u8>)>,
    pub params: Option<Value>,
}

impl QueuedJob {
    pub fn new(job: &NewJob<'_>) -> Self {
        Self {
            job_id: job.job_id,
            kind: job.kind,
            group_id: job.group_id,
            serial_key: job.serial_key.clone(),
            progress_total: job.progress_total,
            idempotency: job.idempotency.map(|(key, fingerprint)| (key.to_owned(), fingerprint.to_vec())),
            params: job.params.cloned(),
        }
    }

    /// The job as submitted, for `user_id` about `character_id` (and `message_id`).
    pub fn parts(&self, user_id: UserId, character_id: CharacterId, message_id: Option<MessageId>) -> NewJob<'_> {
        NewJob {
            job_id: self.job_id,
            user_id,
            kind: self.kind,
            character_id: Some(character_id),
            message_id,
            group_id: self.group_id,
            serial_key: self.serial_key.clone(),
            progress_total: self.progress_total,
            idempotency: self.idempotency.as_ref().map(|(key, fingerprint)| (key.as_str(), fingerprint.as_slice())),
            params: self.params.as_ref(),
        }
    }

    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency.as_ref().map(|(key, _)| key.as_str())
    }

    pub fn request_fingerprint(&self) -> Option<&[u8]> {
        self.idempotency.as_ref().map(|(_, fingerprint)| fingerprint.as_slice())
    }
}

/// A message submission waiting for its round (see [`QueuedJob`]).
pub struct QueuedMessage {
    pub message_id: MessageId,
    pub user_id: UserId,
    pub character_id: CharacterId,
    pub content: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub job: QueuedJob,
}

impl QueuedMessage {
    pub fn new(message: &NewUserMessage<'_>, job: &NewJob<'_>) -> Self {
        debug_assert_eq!(job.message_id, Some(message.message_id), "the job answers the message");
        Self {
            message_id: message.message_id,
            user_id: message.user_id,
            character_id: message.character_id,
            content: message.content.to_owned(),
            created_at: message.created_at,
            job: QueuedJob::new(job),
        }
    }

    /// The message and its job, as `submit_message` was given them.
    pub fn parts(&self) -> (NewUserMessage<'_>, NewJob<'_>) {
        let message = NewUserMessage {
            message_id: self.message_id,
            user_id: self.user_id,
            character_id: self.character_id,
            content: &self.content,
            created_at: self.created_at,
        };
        (message, self.job.parts(self.user_id, self.character_id, Some(self.message_id)))
    }
}

/// A character submission waiting for its round (see [`QueuedJob`]).
pub struct QueuedCharacter {
    pub character_id: CharacterId,
    pub user_id: UserId,
    pub name: String,
    pub source: Value,
    pub language: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub job: QueuedJob,
}

impl QueuedCharacter {
    pub fn new(character: &NewCharacter<'_>, job: &NewJob<'_>) -> Self {
        debug_assert_eq!(job.character_id, Some(character.character_id), "the job generates the character");
        Self {
            character_id: character.character_id,
            user_id: character.user_id,
            name: character.name.to_owned(),
            source: character.source.clone(),
            language: character.language.to_owned(),
            created_at: character.created_at,
            job: QueuedJob::new(job),
        }
    }
}

/// What must still hold for a job to be created (a retry, a regeneration), checked in the
/// transaction that writes it.
#[derive(Clone, Copy, Debug)]
pub enum JobGuard {
    /// A chat reply: the message has no reply stored and none on its way.
    MessageUnanswered(MessageId),
    /// A generation: the user's character is `failed`; it goes back to `generating`.
    CharacterFailed { user_id: UserId, character_id: CharacterId },
    /// A regeneration: the user's character is `ready` (and stays, until the commit).
    CharacterReady { user_id: UserId, character_id: CharacterId },
    /// Nothing to check.
    None,
}

/// What a memory compression absorbed, recorded with its result so the same input is never
/// absorbed twice.
#[derive(Clone, Debug)]
pub enum Absorbed {
    Nothing,
    /// Single-chat messages, now marked compressed.
    Messages(Vec<MessageId>),
    /// A member's group cursor moved from `from` to `to`.
    GroupCursor {
        group_id: GroupId,
        from: Option<MessageId>,
        to: MessageId,
    },
}

/// New memory contents, written if the memory is still at `expected_version`.
pub struct MemoryWrite<'a> {
    pub expected_version: i64,
    pub short_term: &'a [MemoryEntry],
    pub long_term: &'a [MemoryEntry],
    pub absorbed: &'a Absorbed,
}

/// How committing a compression ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionCommit {
    Committed,
    /// The memory was written by someone else since it was read: nothing was written.
    MemoryChanged,
    /// Its messages (or group cursor) were absorbed by someone else: nothing was written.
    AlreadyAbsorbed,
    /// The claim was lost: nothing was written.
    LostClaim,
}

/// The whole-system counts of `GET /v1/admin/stats`.
#[derive(Clone, Debug)]
pub struct SystemStats {
    pub totals: Totals,
    pub characters_by_status: BTreeMap<String, i64>,
    pub jobs_by_kind_and_status: BTreeMap<String, BTreeMap<String, i64>>,
}

/// The whole port: every aggregate's trait, for the one `Arc<dyn Store>` the API and the workers
/// hold. Callers bring the traits into scope with `use fastnpc_shared::store::prelude::*`.
#[async_trait::async_trait]
pub trait Store:
    AccountStore
    + ApiKeyStore
    + StatsStore
    + CharacterStore
    + MessageStore
    + MemoryStore
    + GroupStore
    + JobStore
    + SourceStore
    + DeliveryStore
    + ClaimStore
    + UsageStore
    + TransferStore
    + AvatarStore
    + 'static
{
    /// True when the database answers (readiness).
    async fn ping(&self) -> StoreResult<()>;

    /// What a chat reply's prompt is built from, read from one snapshot: `None` when the
    /// character, the user or the user's message is gone. The session layer is the newest
    /// `session_limit` uncompressed messages before `message_id`.
    ///
    /// Both adapters read it in one statement, and the replies that start together in one
    /// statement for all of them: every reply asks it as it starts, so under a burst it is asked
    /// hundreds of times a second.
    async fn chat_context(
        &self,
        user_id: UserId,
        character_id: CharacterId,
        message_id: MessageId,
        session_limit: i64,
    ) -> StoreResult<Option<ChatContext>>;
}

/// Everything a chat reply's prompt is built from ([`Store::chat_context`]).
#[derive(Clone, Debug)]
pub struct ChatContext {
    pub character: super::characters::CharacterRecord,
    pub user: super::users::UserRecord,
    /// The text of the message answered.
    pub message: String,
    pub memories: super::memories::Memories,
    /// The session layer before the message, oldest first: (written by the user, text).
    pub transcript: Vec<(bool, String)>,
}

/// One row of a one-statement chat-context read, as both adapters' `chat_contexts` select it
/// (`query_as!`, column by column): the position of its ask in the round (from 1), the
/// character's and the user's columns, the message's text, the memory layers as a JSON array
/// of `{layer, content, importance}` in layer and position order, and the session layer as a
/// JSON array of `{author, content}`, oldest first. Decoded in one place
/// ([`ContextRow::into_context`]) so that the stores cannot disagree on what a row means.
pub struct ContextRow {
    pub ord: i64,
    pub character_id: CharacterId,
    pub character_user_id: UserId,
    pub name: String,
    pub status: String,
    pub source: Value,
    pub profile: Option<Value>,
    pub brief: Option<String>,
    pub language: String,
    pub prompt_version: Option<String>,
    pub source_snapshot: Option<Value>,
    pub version: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub memory_version: i64,
    pub user_id: UserId,
    pub username: String,
    pub bio: String,
    pub ctx_max_chat: i32,
    pub ctx_max_stm: i32,
    pub ctx_max_ltm: i32,
    pub max_group_rounds: i32,
    pub user_language: String,
    pub is_admin: bool,
    pub user_created_at: chrono::DateTime<chrono::Utc>,
    pub message: String,
    pub memories: Value,
    pub session: Value,
}

impl ContextRow {
    /// The context this row reads, with its ask's position.
    pub fn into_context(self) -> Result<(i64, ChatContext), sqlx::Error> {
        #[derive(serde::Deserialize)]
        struct Memory {
            layer: String,
            content: String,
            importance: Option<i16>,
        }
        #[derive(serde::Deserialize)]
        struct Line {
            author: String,
            content: String,
        }
        let decode = |error: serde_json::Error| sqlx::Error::Decode(Box::new(error));
        let mut memories = super::memories::Memories { version: self.memory_version, ..Default::default() };
        for entry in serde_json::from_value::<Vec<Memory>>(self.memories).map_err(decode)? {
            let layer = if entry.layer == "short_term" { &mut memories.short_term } else { &mut memories.long_term };
            layer.push(MemoryEntry { content: entry.content, importance: entry.importance });
        }
        let session = serde_json::from_value::<Vec<Line>>(self.session).map_err(decode)?;
        let context = ChatContext {
            character: super::characters::CharacterRecord {
                character_id: self.character_id,
                user_id: self.character_user_id,
                name: self.name,
                status: self.status,
                source: self.source,
                profile: self.profile,
                brief: self.brief,
                language: self.language,
                prompt_version: self.prompt_version,
                source_snapshot: self.source_snapshot,
                version: self.version,
                avatar_etag: None,
                created_at: self.created_at,
                updated_at: self.updated_at,
            },
            user: super::users::UserRecord {
                user_id: self.user_id,
                username: self.username,
                bio: self.bio,
                ctx_max_chat: self.ctx_max_chat,
                ctx_max_stm: self.ctx_max_stm,
                ctx_max_ltm: self.ctx_max_ltm,
                max_group_rounds: self.max_group_rounds,
                language: self.user_language,
                is_admin: self.is_admin,
                created_at: self.user_created_at,
            },
            message: self.message,
            memories,
            transcript: session.into_iter().map(|line| (line.author == "user", line.content)).collect(),
        };
        Ok((self.ord, context))
    }
}
