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
use crate::begin_immediate;
use crate::id_hex;
use crate::id_list;
use crate::json_text;
use crate::store::insert_submitted_job;
use crate::store::over_quota;
use crate::store::write_each_in_savepoint;
use crate::time_text;
use fastnpc_shared::store::Capped;
use fastnpc_shared::store::ChatContext;
use fastnpc_shared::store::ContextRow;
use fastnpc_shared::store::NewUserMessage;
use fastnpc_shared::store::QueuedMessage;
use fastnpc_shared::store::Quota;
use fastnpc_shared::store::StoreResult;
use fastnpc_shared::store::Submitted;
use fastnpc_shared::store::batch::by_position;
use fastnpc_shared::store::jobs::Claim;
use fastnpc_shared::store::jobs::NewJob;
use fastnpc_shared::store::messages::ContextKey;
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

/// `Store::chat_context` for a round of replies in one statement, one answer per key in order,
/// as the Postgres store's `chat_contexts` reads them: the character, the user, the message,
/// both memory layers (as JSON, in layer and position order) and the session layer before the
/// message (as JSON, oldest first: the newest `session_limit` by [`uncompressed`]'s order). One
/// statement reads one snapshot, and it is one trip to a read connection's thread for the
/// round, where piece by piece a reply took seven.
pub async fn chat_contexts(
    db: impl SqliteExecutor<'_>,
    keys: &[ContextKey],
    session_limit: i64,
) -> Result<Vec<Option<ChatContext>>, sqlx::Error> {
    // Each key with its position in the round (from 1, as Postgres' `with ordinality` counts).
    let keys_json = json_text(
        &keys
            .iter()
            .zip(1_i64..)
            .map(|((user_id, character_id, message_id), ord)| {
                (ord, id_hex(user_id.0), id_hex(character_id.0), id_hex(message_id.0))
            })
            .collect::<Vec<_>>(),
    )?;
    let rows = sqlx::query_as!(
        ContextRow,
        r#"with k as (select value ->> 0 as ord, unhex(value ->> 1) as user_id,
                             unhex(value ->> 2) as character_id, unhex(value ->> 3) as message_id
                      from json_each(?1))
           select k.ord as "ord!: i64", c.character_id as "character_id!: CharacterId",
                  c.user_id as "character_user_id!: UserId", c.name, c.status, c.source as "source: Value",
                  c.profile as "profile: Value", c.brief, c.language, c.prompt_version,
                  c.source_snapshot as "source_snapshot: Value", c.version,
                  c.created_at as "created_at: DateTime<Utc>", c.updated_at as "updated_at: DateTime<Utc>",
                  c.memory_version, u.user_id as "user_id!: UserId", u.username, u.bio,
                  u.ctx_max_chat as "ctx_max_chat: i32", u.ctx_max_stm as "ctx_max_stm: i32",
                  u.ctx_max_ltm as "ctx_max_ltm: i32", u.max_group_rounds as "max_group_rounds: i32",
                  u.language as user_language, u.is_admin as "is_admin: bool",
                  u.created_at as "user_created_at: DateTime<Utc>", m.content as message,
                  (select json_group_array(json_object('layer', e.layer, 'content', e.content,
                                                       'importance', e.importance)
                                           order by e.layer, e.position)
                   from memories e where e.character_id = c.character_id) as "memories!: Value",
                  (select json_group_array(json_object('author', s.author, 'content', s.content)
                                           order by s.turn, s.author = 'character')
                   from (select author, content, coalesce(reply_to, message_id) as turn from messages
                         where character_id = c.character_id and not compressed
                           and message_id <> k.message_id and not (author = 'user' and message_id > k.message_id)
                         order by coalesce(reply_to, message_id) desc, author = 'character' desc
                         limit ?2) s) as "session!: Value"
           from k
           join characters c on c.character_id = k.character_id
           join users u on u.user_id = k.user_id
           join messages m on m.message_id = k.message_id and m.user_id = k.user_id"#,
        keys_json,
        session_limit,
    )
    .fetch_all(db)
    .await?;
    let contexts = rows.into_iter().map(ContextRow::into_context).collect::<Result<Vec<_>, _>>()?;
    // A key whose character, user or message is gone has no row: its answer stays `None`.
    by_position(keys.len(), contexts)
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
}

/// One finish in `tx`, as [`finish_all`] writes a round: the fallback of a refused round.
async fn finish_alone(tx: &mut sqlx::SqliteConnection, finish: &QueuedFinish) -> StoreResult<Option<StoredReply>> {
    let stored = finish_all(tx, std::slice::from_ref(finish)).await?;
    Ok(stored.into_iter().next().flatten())
}

/// A round of finishes in `tx`, in four statements whatever its size (one round-trip each to
/// SQLite's thread, which a busy writer waits on more than on the work): the jobs whose claims
/// hold end (with each attempt's usage), their replies are inserted, the day's usage is added
/// per user, and the session layers' sizes are read. A finish whose claim was lost writes
/// nothing and answers `None`. Each session size is read after the whole round: two replies of
/// one character cannot finish in one round (a character's replies are one series, run one at a
/// time), so it is the size each would see alone.
async fn finish_all(tx: &mut sqlx::SqliteConnection, round: &[QueuedFinish]) -> StoreResult<Vec<Option<StoredReply>>> {
    #[derive(serde::Serialize)]
    struct Ending<'a> {
        job: String,
        attempt: i32,
        result: &'a Value,
        calls: i64,
        prompt_tokens: i64,
        completion_tokens: i64,
    }
    #[derive(serde::Serialize)]
    struct Reply<'a> {
        message: String,
        user: String,
        character: String,
        content: &'a str,
        job: String,
        reply_to: String,
        prompt_snapshot: &'a str,
        truncated: bool,
        prompt_version: Option<&'a str>,
        created_at: String,
    }
    let now = crate::now();
    // Read once: the job and the day must add the same spend.
    let usages: Vec<_> = round.iter().map(|finish| finish.claim.usage.total()).collect();
    let endings: Vec<Ending<'_>> = round
        .iter()
        .zip(&usages)
        .map(|(finish, &usage)| {
            let (calls, prompt_tokens, completion_tokens) = fastnpc_shared::store::usage::to_columns(usage);
            Ending {
                job: id_hex(finish.claim.job_id.0),
                attempt: finish.claim.attempt,
                result: &finish.result,
                calls,
                prompt_tokens,
                completion_tokens,
            }
        })
        .collect();
    let endings = json_text(&endings)?;
    let ended: std::collections::HashSet<(JobId, i32)> = sqlx::query!(
        r#"update jobs
           set status = 'succeeded', result = ending.value -> 'result', progress_done = progress_total,
               lease_until = null, finished_at = ?2, updated_at = ?2,
               usage_calls = usage_calls + (ending.value ->> 'calls'),
               usage_prompt_tokens = usage_prompt_tokens + (ending.value ->> 'prompt_tokens'),
               usage_completion_tokens = usage_completion_tokens + (ending.value ->> 'completion_tokens')
           from json_each(?1) ending
           where jobs.job_id = unhex(ending.value ->> 'job') and jobs.attempts = ending.value ->> 'attempt'
             and jobs.status = 'running'
           returning job_id as "job_id!: JobId", attempts as "attempt!: i32""#,
        endings,
        now,
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|row| (row.job_id, row.attempt))
    .collect();
    let holds = |finish: &QueuedFinish| ended.contains(&(finish.claim.job_id, finish.claim.attempt));

    let replies: Vec<Reply<'_>> = round
        .iter()
        .filter(|finish| holds(finish))
        .map(|finish| {
            let reply = &finish.reply;
            Reply {
                message: id_hex(reply.message_id.0),
                user: id_hex(reply.user_id.0),
                character: id_hex(reply.character_id.0),
                content: &reply.content,
                job: id_hex(reply.job_id.0),
                reply_to: id_hex(reply.reply_to.0),
                prompt_snapshot: &reply.prompt_snapshot,
                truncated: reply.truncated,
                prompt_version: reply.prompt_version.as_deref(),
                created_at: time_text(reply.created_at),
            }
        })
        .collect();
    if replies.is_empty() {
        return Ok(vec![None; round.len()]);
    }
    let replies = json_text(&replies)?;
    sqlx::query!(
        "insert into messages (message_id, user_id, character_id, author, content, job_id, reply_to, prompt_snapshot,
                               truncated, prompt_version, created_at)
         select unhex(reply.value ->> 'message'), unhex(reply.value ->> 'user'), unhex(reply.value ->> 'character'),
                'character', reply.value ->> 'content', unhex(reply.value ->> 'job'), unhex(reply.value ->> 'reply_to'),
                reply.value ->> 'prompt_snapshot', reply.value ->> 'truncated', reply.value ->> 'prompt_version',
                reply.value ->> 'created_at'
         from json_each(?1) reply",
        replies,
    )
    .execute(&mut *tx)
    .await?;

    let mut spent: Vec<(UserId, fastnpc_shared::llm::Usage)> = Vec::new();
    for (finish, &usage) in round.iter().zip(&usages).filter(|(finish, _)| holds(finish)) {
        match spent.iter_mut().find(|(user_id, _)| *user_id == finish.claim.user_id) {
            Some((_, total)) => *total += usage,
            None => spent.push((finish.claim.user_id, usage)),
        }
    }
    for (user_id, usage) in spent {
        crate::usage::spend(&mut *tx, user_id, now, usage).await?;
    }

    let characters = id_list(round.iter().filter(|finish| holds(finish)).map(|finish| finish.reply.character_id.0));
    let sizes: std::collections::HashMap<CharacterId, i64> = sqlx::query!(
        r#"select character_id as "character_id!: CharacterId", coalesce(sum(length(content)), 0) as "chars!: i64"
           from messages
           where character_id in (select unhex(value) from json_each(?1)) and not compressed
           group by character_id"#,
        characters,
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|row| (row.character_id, row.chars))
    .collect();
    Ok(round
        .iter()
        .map(|finish| {
            holds(finish).then(|| StoredReply {
                session_chars: sizes.get(&finish.reply.character_id).copied().unwrap_or_default(),
            })
        })
        .collect())
}

impl SqliteStore {
    /// Writes a round of finishes in one transaction, each as if written alone, in order: a lost
    /// claim leaves nothing of its own behind. The round is written a few statements for all of
    /// it ([`finish_all`]); when the database refuses one of them (a reply whose id is taken),
    /// nothing of the round stays, and each finish is written again in a savepoint of its own, so
    /// that the refusal fails only the finish it concerns.
    async fn finish_round(&self, round: &[QueuedFinish]) -> Vec<StoreResult<Option<StoredReply>>> {
        let together = async {
            let mut tx = begin_immediate(&self.writer).await?;
            let stored = finish_all(&mut tx, round).await?;
            tx.commit().await?;
            Ok(stored)
        };
        match together.await {
            Ok(stored) => stored.into_iter().map(Ok).collect(),
            Err(error @ sqlx::Error::Database(_)) => {
                tracing::warn!(%error, finishes = round.len(), "a round of finishes was refused; writing each alone");
                write_each_in_savepoint(&self.writer, round, finish_alone, |outcome| matches!(outcome, Ok(Some(_))))
                    .await
            }
            Err(error) => fastnpc_shared::store::batch::failed_round(error, round.len()),
        }
    }

    /// Writes a round of message submissions in one transaction, each as if submitted alone, in
    /// order. Each has a savepoint: one that is refused (or fails) leaves nothing behind, and the
    /// others stand.
    ///
    /// The round is first written a few statements for all of it ([`submit_all`]). When that is
    /// refused (a reused idempotency key) or takes a user past a quota, nothing of it stays, and
    /// it is written again submission by submission, each in a savepoint of its own.
    async fn insert_messages(&self, round: &[QueuedMessage], quota: &Quota) -> Vec<StoreResult<Submitted>> {
        let together = async {
            let mut tx = begin_immediate(&self.writer).await?;
            let submitted = submit_all(&mut tx, round, quota).await?;
            if submitted.is_some() {
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(submitted)
        };
        match together.await {
            Ok(Some(submitted)) => return submitted.into_iter().map(Ok).collect(),
            // Past a quota: which submission is refused depends on the order, written in turn.
            Ok(None) => {}
            Err(sqlx::Error::Database(_)) => {}
            Err(error) => return fastnpc_shared::store::batch::failed_round(error, round.len()),
        }
        let quota = *quota;
        let insert = async move |tx: &mut sqlx::SqliteConnection, queued: &QueuedMessage| {
            let (message, job) = queued.parts();
            insert_message(tx, message, job, &quota).await
        };
        write_each_in_savepoint(&self.writer, round, insert, |outcome| matches!(outcome, Ok(Submitted::Created))).await
    }
}

/// A round of submissions in `tx`, in four statements whatever its size: which characters are
/// the users' and ready, the messages, their jobs, and the users' active jobs. `None` (and the
/// caller rolls back) when a user ends up past the active-jobs quota: then some submissions of
/// the round must be refused, and which ones depends on their order. Under the quota, every
/// submission whose character is ready is created, as it would be written in turn (counts only
/// grow within a round, so no earlier one was past it either).
async fn submit_all(
    tx: &mut sqlx::SqliteConnection,
    round: &[QueuedMessage],
    quota: &Quota,
) -> StoreResult<Option<Vec<Submitted>>> {
    #[derive(serde::Serialize)]
    struct Submission<'a> {
        message: String,
        user: String,
        character: String,
        content: &'a str,
        created_at: String,
        job: String,
        kind: &'a str,
        group: Option<String>,
        serial_key: Option<&'a str>,
        progress_total: i32,
        idempotency_key: Option<&'a str>,
        fingerprint: Option<String>,
        /// Absent rather than `null`, so that `-> 'params'` is SQL `NULL`.
        #[serde(skip_serializing_if = "Option::is_none")]
        params: Option<&'a Value>,
    }
    let characters = id_list(round.iter().map(|queued| queued.character_id.0));
    let ready: std::collections::HashSet<(CharacterId, UserId)> = sqlx::query!(
        r#"select character_id as "character_id!: CharacterId", user_id as "user_id!: UserId" from characters
           where character_id in (select unhex(value) from json_each(?1)) and status = 'ready'"#,
        characters,
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|row| (row.character_id, row.user_id))
    .collect();
    let holds = |queued: &QueuedMessage| ready.contains(&(queued.character_id, queued.user_id));
    let submissions: Vec<Submission<'_>> = round
        .iter()
        .filter(|queued| holds(queued))
        .map(|queued| {
            let job = &queued.job;
            let (idempotency_key, fingerprint) =
                job.idempotency.as_ref().map(|(key, bytes)| (key.as_str(), bytes)).unzip();
            Submission {
                message: id_hex(queued.message_id.0),
                user: id_hex(queued.user_id.0),
                character: id_hex(queued.character_id.0),
                content: &queued.content,
                created_at: time_text(queued.created_at),
                job: id_hex(job.job_id.0),
                kind: job.kind.as_str(),
                group: job.group_id.map(|id| id_hex(id.0)),
                serial_key: job.serial_key.as_deref(),
                progress_total: job.progress_total,
                idempotency_key,
                fingerprint: fingerprint.map(|bytes| crate::hex(bytes)),
                params: job.params.as_ref(),
            }
        })
        .collect();
    if submissions.is_empty() {
        return Ok(Some(vec![Submitted::GuardFailed; round.len()]));
    }
    let submissions = json_text(&submissions)?;
    sqlx::query!(
        "insert into messages (message_id, user_id, character_id, author, content, created_at)
         select unhex(submission.value ->> 'message'), unhex(submission.value ->> 'user'),
                unhex(submission.value ->> 'character'), 'user', submission.value ->> 'content',
                submission.value ->> 'created_at'
         from json_each(?1) submission",
        submissions,
    )
    .execute(&mut *tx)
    .await?;
    let now = crate::now();
    sqlx::query!(
        "insert into jobs (job_id, user_id, kind, character_id, message_id, group_id, serial_key, progress_total,
                           idempotency_key, request_fingerprint, created_at, updated_at, params)
         select unhex(submission.value ->> 'job'), unhex(submission.value ->> 'user'), submission.value ->> 'kind',
                unhex(submission.value ->> 'character'), unhex(submission.value ->> 'message'),
                unhex(submission.value ->> 'group'), submission.value ->> 'serial_key', submission.value ->> 'progress_total',
                submission.value ->> 'idempotency_key', unhex(submission.value ->> 'fingerprint'), ?2, ?2,
                submission.value -> 'params'
         from json_each(?1) submission",
        submissions,
        now,
    )
    .execute(&mut *tx)
    .await?;
    let users = id_list(round.iter().filter(|queued| holds(queued)).map(|queued| queued.user_id.0));
    let active = sqlx::query!(
        r#"select count(*) as "count!: i64" from jobs
           where user_id in (select unhex(value) from json_each(?1)) and status in ('queued', 'running')
           group by user_id"#,
        users,
    )
    .fetch_all(&mut *tx)
    .await?;
    if active.iter().any(|row| quota.exceeded(&[(Capped::ActiveJobs, row.count)]).is_some()) {
        return Ok(None);
    }
    Ok(Some(
        round.iter().map(|queued| if holds(queued) { Submitted::Created } else { Submitted::GuardFailed }).collect(),
    ))
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
