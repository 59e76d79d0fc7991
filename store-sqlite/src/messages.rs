//! Chat messages of one character's conversation (mirrors `fastnpc_shared::store::messages`).
//! Scoped by owner wherever the API reads.
//!
//! Ids are 16-byte blobs compared bytewise, which for UUIDv7 is creation order, so the id
//! cursors and the `coalesce(reply_to, message_id)` conversation order are those of Postgres.
//! SQLite's `length()` counts characters of text, as Postgres' `char_length()` does, and
//! [`mark_compressed`] passes its ids as a JSON array (SQLite has no array parameters).

use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::{CharacterId, JobId, MessageId, UserId},
    store::messages::{MessageRecord, NewReply, StoredReply},
};
use serde_json::Value;
use sqlx::SqliteExecutor;

use crate::SqliteStore;
use crate::id_list;
use crate::jobs;
use crate::store::insert_submitted_job;
use crate::store::over_quota;
use crate::store::write_each_in_savepoint;
use fastnpc_shared::store::Capped;
use fastnpc_shared::store::NewUserMessage;
use fastnpc_shared::store::QueuedMessage;
use fastnpc_shared::store::Quota;
use fastnpc_shared::store::StoreResult;
use fastnpc_shared::store::Submitted;
use fastnpc_shared::store::jobs::Claim;
use fastnpc_shared::store::jobs::NewJob;
use fastnpc_shared::store::messages::MessageStore;

pub async fn insert_user_message(
    db: impl SqliteExecutor<'_>,
    message_id: MessageId,
    user_id: UserId,
    character_id: CharacterId,
    content: &str,
) -> Result<(), sqlx::Error> {
    insert_new_user_message(db, &NewUserMessage::new(message_id, user_id, character_id, content)).await
}

async fn insert_new_user_message(db: impl SqliteExecutor<'_>, message: &NewUserMessage<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into messages (message_id, user_id, character_id, author, content, created_at)
         values (?1, ?2, ?3, 'user', ?4, ?5)",
        message.message_id.0,
        message.user_id.0,
        message.character_id.0,
        message.content,
        message.created_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Stores a character's reply; the unique `job_id` makes a second store of one job's reply fail.
pub async fn insert_reply(db: impl SqliteExecutor<'_>, reply: NewReply<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into messages (message_id, user_id, character_id, author, content, job_id, reply_to, prompt_snapshot,
                               truncated, prompt_version, created_at)
         values (?1, ?2, ?3, 'character', ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        reply.message_id.0,
        reply.user_id.0,
        reply.character_id.0,
        reply.content,
        reply.job_id.0,
        reply.reply_to.0,
        reply.prompt_snapshot,
        reply.truncated,
        reply.prompt_version,
        reply.created_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// One message of the user's.
pub async fn get(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    message_id: MessageId,
) -> Result<Option<MessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        MessageRecord,
        r#"select message_id as "message_id!: MessageId", character_id as "character_id: CharacterId", author,
                  content, compressed as "compressed: bool", job_id as "job_id: JobId",
                  reply_to as "reply_to: MessageId", prompt_snapshot, truncated as "truncated: bool",
                  prompt_version, created_at as "created_at: DateTime<Utc>"
           from messages where message_id = ?1 and user_id = ?2"#,
        message_id.0,
        user_id.0,
    )
    .fetch_optional(db)
    .await
}

/// The reply a job stored, if any.
pub async fn reply_of_job(db: impl SqliteExecutor<'_>, job_id: JobId) -> Result<Option<MessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        MessageRecord,
        r#"select message_id as "message_id!: MessageId", character_id as "character_id: CharacterId", author,
                  content, compressed as "compressed: bool", job_id as "job_id: JobId",
                  reply_to as "reply_to: MessageId", prompt_snapshot, truncated as "truncated: bool",
                  prompt_version, created_at as "created_at: DateTime<Utc>"
           from messages where job_id = ?1"#,
        job_id.0,
    )
    .fetch_optional(db)
    .await
}

/// A page of the conversation, newest first; `before` is the last id of the previous page.
pub async fn history(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    character_id: CharacterId,
    before: Option<MessageId>,
    limit: i64,
) -> Result<Vec<MessageRecord>, sqlx::Error> {
    let before = before.map(|id| id.0);
    sqlx::query_as!(
        MessageRecord,
        r#"select message_id as "message_id!: MessageId", character_id as "character_id: CharacterId", author,
                  content, compressed as "compressed: bool", job_id as "job_id: JobId",
                  reply_to as "reply_to: MessageId", prompt_snapshot, truncated as "truncated: bool",
                  prompt_version, created_at as "created_at: DateTime<Utc>"
           from messages
           where character_id = ?1 and user_id = ?2 and (?3 is null or message_id < ?3)
           order by message_id desc
           limit ?4"#,
        character_id.0,
        user_id.0,
        before,
        limit,
    )
    .fetch_all(db)
    .await
}

/// The session layer in conversation order (each reply right after the message it answers),
/// at most the `limit` newest. With `answering`, the context of that message's reply: the message
/// itself and user messages sent after it are left out.
pub async fn uncompressed(
    db: impl SqliteExecutor<'_>,
    character_id: CharacterId,
    answering: Option<MessageId>,
    limit: i64,
) -> Result<Vec<MessageRecord>, sqlx::Error> {
    let answering = answering.map(|id| id.0);
    let mut newest_first = sqlx::query_as!(
        MessageRecord,
        r#"select message_id as "message_id!: MessageId", character_id as "character_id: CharacterId", author,
                  content, compressed as "compressed: bool", job_id as "job_id: JobId",
                  reply_to as "reply_to: MessageId", prompt_snapshot, truncated as "truncated: bool",
                  prompt_version, created_at as "created_at: DateTime<Utc>"
           from messages
           where character_id = ?1 and not compressed
             and (?2 is null or (message_id <> ?2 and not (author = 'user' and message_id > ?2)))
           order by coalesce(reply_to, message_id) desc, author = 'character' desc
           limit ?3"#,
        character_id.0,
        answering,
        limit,
    )
    .fetch_all(db)
    .await?;
    newest_first.reverse();
    Ok(newest_first)
}

/// Total characters of the session layer (the original's budget unit).
pub async fn uncompressed_chars(db: impl SqliteExecutor<'_>, character_id: CharacterId) -> Result<i64, sqlx::Error> {
    let row = sqlx::query!(
        r#"select coalesce(sum(length(content)), 0) as "chars!: i64" from messages
           where character_id = ?1 and not compressed"#,
        character_id.0,
    )
    .fetch_one(db)
    .await?;
    Ok(row.chars)
}

/// Marks messages as absorbed by memory. Returns how many were still uncompressed.
pub async fn mark_compressed(db: impl SqliteExecutor<'_>, ids: &[MessageId]) -> Result<u64, sqlx::Error> {
    let ids = id_list(ids.iter().map(|id| id.0));
    let result = sqlx::query!(
        "update messages set compressed = 1
         where message_id in (select unhex(value) from json_each(?1)) and not compressed",
        ids,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// The oldest uncompressed messages, in conversation order, at most `limit`: what a compression
/// summarises first.
pub async fn oldest_uncompressed(
    db: impl SqliteExecutor<'_>,
    character_id: CharacterId,
    limit: i64,
) -> Result<Vec<MessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        MessageRecord,
        r#"select message_id as "message_id!: MessageId", character_id as "character_id: CharacterId", author,
                  content, compressed as "compressed: bool", job_id as "job_id: JobId",
                  reply_to as "reply_to: MessageId", prompt_snapshot, truncated as "truncated: bool",
                  prompt_version, created_at as "created_at: DateTime<Utc>"
           from messages
           where character_id = ?1 and not compressed
           order by coalesce(reply_to, message_id), author = 'character'
           limit ?2"#,
        character_id.0,
        limit,
    )
    .fetch_all(db)
    .await
}

#[async_trait::async_trait]
impl MessageStore for SqliteStore {
    async fn submit_message(
        &self,
        message: NewUserMessage<'_>,
        job: NewJob<'_>,
        quota: &Quota,
    ) -> StoreResult<Submitted> {
        // Group commit per user, as in Postgres: the submissions that arrive while a round is
        // being written share the next round's `BEGIN IMMEDIATE`, so a burst takes the one write
        // connection once per round instead of once per message.
        let (store, quota) = (self.clone(), *quota);
        let queued = QueuedMessage::new(&message, &job);
        self.message_rounds
            .submit((), queued, move |(), round| {
                let store = store.clone();
                async move { store.insert_messages(&round, &quota).await }
            })
            .await
    }

    async fn message(&self, user_id: UserId, message_id: MessageId) -> StoreResult<Option<MessageRecord>> {
        get(&self.pool, user_id, message_id).await
    }

    async fn reply_of_job(&self, job_id: JobId) -> StoreResult<Option<MessageRecord>> {
        reply_of_job(&self.pool, job_id).await
    }

    async fn message_history(
        &self,
        user_id: UserId,
        character_id: CharacterId,
        before: Option<MessageId>,
        limit: i64,
    ) -> StoreResult<Vec<MessageRecord>> {
        history(&self.pool, user_id, character_id, before, limit).await
    }

    async fn uncompressed_messages(
        &self,
        character_id: CharacterId,
        answering: Option<MessageId>,
        limit: i64,
    ) -> StoreResult<Vec<MessageRecord>> {
        uncompressed(&self.pool, character_id, answering, limit).await
    }

    async fn uncompressed_chars(&self, character_id: CharacterId) -> StoreResult<i64> {
        uncompressed_chars(&self.pool, character_id).await
    }

    async fn oldest_uncompressed(&self, character_id: CharacterId, limit: i64) -> StoreResult<Vec<MessageRecord>> {
        oldest_uncompressed(&self.pool, character_id, limit).await
    }

    /// As in Postgres, the replies that finish while a round is written are written by the next
    /// round: here one `BEGIN IMMEDIATE` transaction for the round ([`SqliteStore::finish_round`]),
    /// so a burst takes the one write connection once per round instead of once per reply.
    async fn finish_reply(
        &self,
        claim: &Claim,
        reply: NewReply<'_>,
        result: &Value,
    ) -> StoreResult<Option<StoredReply>> {
        let finish = QueuedFinish { claim: claim.clone(), reply: QueuedReply::new(reply), result: result.clone() };
        let store = self.clone();
        self.finish_rounds
            .submit((), finish, move |(), round| {
                let store = store.clone();
                async move { store.finish_round(&round).await }
            })
            .await
    }
}

/// A finish waiting for its round: [`MessageStore::finish_reply`]'s arguments, owned.
pub(crate) struct QueuedFinish {
    claim: Claim,
    reply: QueuedReply,
    result: Value,
}

/// A [`NewReply`] that owns its text.
struct QueuedReply {
    message_id: MessageId,
    user_id: UserId,
    character_id: CharacterId,
    reply_to: MessageId,
    content: String,
    job_id: JobId,
    prompt_snapshot: String,
    truncated: bool,
    prompt_version: Option<String>,
    created_at: DateTime<Utc>,
}

impl QueuedReply {
    fn new(reply: NewReply<'_>) -> Self {
        Self {
            message_id: reply.message_id,
            user_id: reply.user_id,
            character_id: reply.character_id,
            reply_to: reply.reply_to,
            content: reply.content.to_owned(),
            job_id: reply.job_id,
            prompt_snapshot: reply.prompt_snapshot.to_owned(),
            truncated: reply.truncated,
            prompt_version: reply.prompt_version.map(str::to_owned),
            created_at: reply.created_at,
        }
    }

    fn as_new_reply(&self) -> NewReply<'_> {
        NewReply {
            message_id: self.message_id,
            user_id: self.user_id,
            character_id: self.character_id,
            reply_to: self.reply_to,
            content: &self.content,
            job_id: self.job_id,
            prompt_snapshot: &self.prompt_snapshot,
            truncated: self.truncated,
            prompt_version: self.prompt_version.as_deref(),
            created_at: self.created_at,
        }
    }
}

/// Ends the claimed job and stores its reply, in `tx`; `None` (and nothing written) when the
/// claim was lost.
async fn finish(tx: &mut sqlx::SqliteConnection, finish: &QueuedFinish) -> StoreResult<Option<StoredReply>> {
    // The claim first: a lost claim's reply must come back as lost, not collide with the reply
    // its successor already stored.
    if !jobs::succeed(&mut *tx, &finish.claim, &finish.result).await? {
        return Ok(None);
    }
    insert_reply(&mut *tx, finish.reply.as_new_reply()).await?;
    let session_chars = uncompressed_chars(&mut *tx, finish.reply.character_id).await?;
    Ok(Some(StoredReply { session_chars }))
}

impl SqliteStore {
    /// Writes a round of finishes in one transaction, each as if written alone, in order: a lost
    /// claim or a refused reply leaves nothing of its own behind and fails only itself.
    async fn finish_round(&self, round: &[QueuedFinish]) -> Vec<StoreResult<Option<StoredReply>>> {
        write_each_in_savepoint(&self.writer, round, finish, |outcome| matches!(outcome, Ok(Some(_)))).await
    }

    /// Writes a round of message submissions in one transaction, each as if submitted alone, in
    /// order. Each has a savepoint: one that is refused (or fails) leaves nothing behind, and the
    /// others stand.
    async fn insert_messages(&self, round: &[QueuedMessage], quota: &Quota) -> Vec<StoreResult<Submitted>> {
        let quota = *quota;
        let insert = async move |tx: &mut sqlx::SqliteConnection, queued: &QueuedMessage| {
            let (message, job) = queued.parts();
            insert_message(tx, message, job, &quota).await
        };
        write_each_in_savepoint(&self.writer, round, insert, |outcome| matches!(outcome, Ok(Submitted::Created))).await
    }
}

/// A user message and its job, if the character is the user's and ready and the user has room
/// for another active job.
async fn insert_message(
    tx: &mut sqlx::SqliteConnection,
    message: NewUserMessage<'_>,
    job: NewJob<'_>,
    quota: &Quota,
) -> StoreResult<Submitted> {
    if !crate::characters::hold_ready(&mut *tx, message.user_id, message.character_id).await? {
        return Ok(Submitted::GuardFailed);
    }
    insert_new_user_message(&mut *tx, &message).await?;
    if let Err(taken) = insert_submitted_job(tx, job).await? {
        return Ok(taken);
    }
    if let Some(cap) = over_quota(tx, message.user_id, quota, &[Capped::ActiveJobs]).await? {
        return Ok(Submitted::OverQuota(cap));
    }
    Ok(Submitted::Created)
}
