//! Chat messages of one character's conversation. Scoped by owner wherever the API reads.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

use super::Capped;
use super::NewUserMessage;
use super::PgStore;
use super::QueuedMessage;
use super::Quota;
use super::StoreResult;
use super::Submitted;
use super::batch::by_position;
use super::jobs::Claim;
use super::jobs::NewJob;
use super::postgres::{JobColumns, column, submission_lane, write_round};
use crate::ids::{CharacterId, JobId, MessageId, UserId};

/// A stored message.
#[derive(Clone, Debug)]
pub struct MessageRecord {
    pub message_id: MessageId,
    pub character_id: CharacterId,
    /// `user` or `character`.
    pub author: String,
    pub content: String,
    pub compressed: bool,
    /// For replies: the job that produced it.
    pub job_id: Option<JobId>,
    /// For replies: the user message answered.
    pub reply_to: Option<MessageId>,
    pub prompt_snapshot: Option<String>,
    /// For replies: the model stopped at the output limit, so the text is cut.
    pub truncated: bool,
    /// For replies: the prompt set that wrote it (none for replies from before prompts had
    /// versions).
    pub prompt_version: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A character's reply to store.
pub struct NewReply<'a> {
    pub message_id: MessageId,
    pub user_id: UserId,
    pub character_id: CharacterId,
    pub reply_to: MessageId,
    pub content: &'a str,
    pub job_id: JobId,
    pub prompt_snapshot: &'a str,
    /// The model stopped at the output limit.
    pub truncated: bool,
    /// The prompt set that wrote the reply.
    pub prompt_version: Option<&'a str>,
    /// Stamped by the worker, as a user message is by the API ([`super::stamp`]): the stored row
    /// is then known before it is written, and the job's result can be written with it.
    pub created_at: DateTime<Utc>,
}

/// A reply stored by [`MessageStore::finish_reply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredReply {
    /// The session layer's size with the reply in it (the characters of the uncompressed
    /// messages, the original's budget unit): whether a compression is due.
    pub session_chars: i64,
}

/// One message of the user's.
pub(crate) async fn get(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    message_id: MessageId,
) -> Result<Option<MessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        MessageRecord,
        r#"select message_id as "message_id: MessageId", character_id as "character_id: CharacterId", author, content,
                  compressed, job_id as "job_id: JobId", reply_to as "reply_to: MessageId", prompt_snapshot, truncated,
                  prompt_version, created_at
           from messages where message_id = $1 and user_id = $2"#,
        message_id.0,
        user_id.0,
    )
    .fetch_optional(db)
    .await
}

/// The reply a job stored, if any.
pub(crate) async fn reply_of_job(db: impl PgExecutor<'_>, job_id: JobId) -> Result<Option<MessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        MessageRecord,
        r#"select message_id as "message_id: MessageId", character_id as "character_id: CharacterId", author, content,
                  compressed, job_id as "job_id: JobId", reply_to as "reply_to: MessageId", prompt_snapshot, truncated,
                  prompt_version, created_at
           from messages where job_id = $1"#,
        job_id.0,
    )
    .fetch_optional(db)
    .await
}

/// A page of the conversation, newest first; `before` is the last id of the previous page.
/// Ids are UUIDv7, so the id alone is a stable cursor: new messages never shift older pages.
pub(crate) async fn history(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    character_id: CharacterId,
    before: Option<MessageId>,
    limit: i64,
) -> Result<Vec<MessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        MessageRecord,
        r#"select message_id as "message_id: MessageId", character_id as "character_id: CharacterId", author, content,
                  compressed, job_id as "job_id: JobId", reply_to as "reply_to: MessageId", prompt_snapshot, truncated,
                  prompt_version, created_at
           from messages
           where character_id = $1 and user_id = $2 and ($3::uuid is null or message_id < $3)
           order by message_id desc
           limit $4"#,
        character_id.0,
        user_id.0,
        before.map(|id| id.0),
        limit,
    )
    .fetch_all(db)
    .await
}

/// The session layer in conversation order (each reply right after the message it answers),
/// at most the `limit` newest. With `answering`, the context of that message's reply: the message
/// itself and user messages sent after it are left out.
pub(crate) async fn uncompressed(
    db: impl PgExecutor<'_>,
    character_id: CharacterId,
    answering: Option<MessageId>,
    limit: i64,
) -> Result<Vec<MessageRecord>, sqlx::Error> {
    let mut newest_first = sqlx::query_as!(
        MessageRecord,
        r#"select message_id as "message_id: MessageId", character_id as "character_id: CharacterId", author, content,
                  compressed, job_id as "job_id: JobId", reply_to as "reply_to: MessageId", prompt_snapshot, truncated,
                  prompt_version, created_at
           from messages
           where character_id = $1 and not compressed
             and ($2::uuid is null or (message_id <> $2 and not (author = 'user' and message_id > $2)))
           order by coalesce(reply_to, message_id) desc, author = 'character' desc
           limit $3"#,
        character_id.0,
        answering.map(|id| id.0),
        limit,
    )
    .fetch_all(db)
    .await?;
    newest_first.reverse();
    Ok(newest_first)
}

/// Total characters of the session layer (the original's budget unit).
pub(crate) async fn uncompressed_chars(db: impl PgExecutor<'_>, character_id: CharacterId) -> Result<i64, sqlx::Error> {
    let row = sqlx::query!(
        r#"select coalesce(sum(char_length(content)), 0)::bigint as "chars!" from messages
           where character_id = $1 and not compressed"#,
        character_id.0,
    )
    .fetch_one(db)
    .await?;
    Ok(row.chars)
}

/// Marks messages as absorbed by memory. Returns how many were still uncompressed.
pub(crate) async fn mark_compressed(db: impl PgExecutor<'_>, ids: &[MessageId]) -> Result<u64, sqlx::Error> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
    let result =
        sqlx::query!("update messages set compressed = true where message_id = any($1) and not compressed", &ids,)
            .execute(db)
            .await?;
    Ok(result.rows_affected())
}

/// The oldest uncompressed messages, in conversation order, at most `limit`: what a compression
/// summarises first.
pub(crate) async fn oldest_uncompressed(
    db: impl PgExecutor<'_>,
    character_id: CharacterId,
    limit: i64,
) -> Result<Vec<MessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        MessageRecord,
        r#"select message_id as "message_id: MessageId", character_id as "character_id: CharacterId", author, content,
                  compressed, job_id as "job_id: JobId", reply_to as "reply_to: MessageId", prompt_snapshot, truncated,
                  prompt_version, created_at
           from messages
           where character_id = $1 and not compressed
           order by coalesce(reply_to, message_id), author = 'character'
           limit $2"#,
        character_id.0,
        limit,
    )
    .fetch_all(db)
    .await
}

/// One-to-one chat: user messages, the jobs that answer them, the replies.
#[async_trait::async_trait]
pub trait MessageStore: Send + Sync {
    /// A user message and the job that answers it, together, if the character is the user's and
    /// ready ([`Submitted::GuardFailed`] otherwise): the accept's one round-trip checks that too.
    async fn submit_message(
        &self,
        message: NewUserMessage<'_>,
        job: NewJob<'_>,
        quota: &Quota,
    ) -> StoreResult<Submitted>;
    async fn message(&self, user_id: UserId, message_id: MessageId) -> StoreResult<Option<MessageRecord>>;
    async fn reply_of_job(&self, job_id: JobId) -> StoreResult<Option<MessageRecord>>;
    async fn message_history(
        &self,
        user_id: UserId,
        character_id: CharacterId,
        before: Option<MessageId>,
        limit: i64,
    ) -> StoreResult<Vec<MessageRecord>>;
    /// The newest `limit` uncompressed messages up to `answering` (oldest first).
    async fn uncompressed_messages(
        &self,
        character_id: CharacterId,
        answering: Option<MessageId>,
        limit: i64,
    ) -> StoreResult<Vec<MessageRecord>>;
    async fn uncompressed_chars(&self, character_id: CharacterId) -> StoreResult<i64>;
    async fn oldest_uncompressed(&self, character_id: CharacterId, limit: i64) -> StoreResult<Vec<MessageRecord>>;
    /// Stores a reply and ends its job as succeeded with `result`, together; `None` when the
    /// claim was lost (nothing written).
    async fn finish_reply(
        &self,
        claim: &Claim,
        reply: NewReply<'_>,
        result: &Value,
    ) -> StoreResult<Option<StoredReply>>;
}

#[async_trait::async_trait]
impl MessageStore for PgStore {
    async fn submit_message(
        &self,
        message: NewUserMessage<'_>,
        job: NewJob<'_>,
        quota: &Quota,
    ) -> StoreResult<Submitted> {
        // Group commit: every submission takes its user's quota lock until its commit, so a
        // burst of one user's messages would otherwise go through one commit (one WAL flush) at
        // a time, and a burst of many users' would pay a statement and a commit each. Those that
        // arrive while a round of their lane is being written share the next round's statement
        // and commit. A user's submissions are always in one lane, so they are written in the
        // order they were made; the lanes let a few rounds run at once.
        let (store, quota) = (self.clone(), *quota);
        let queued = QueuedMessage::new(&message, &job);
        self.message_rounds
            .submit(submission_lane(message.user_id), queued, move |_, round| {
                let store = store.clone();
                async move { write_round(&round, |round| store.insert_messages(round, &quota)).await }
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

    /// One statement, so one round-trip and one commit: the job ends (and its usage is added, as
    /// in `jobs::succeed`) only if the claim holds, the reply is inserted only if the job ended,
    /// and the session layer's size comes back for the compression check. Under a burst the
    /// replies that finish while a round runs are stored by the next round, in one statement and
    /// one commit ([`finish_round`]).
    async fn finish_reply(
        &self,
        claim: &Claim,
        reply: NewReply<'_>,
        result: &Value,
    ) -> StoreResult<Option<StoredReply>> {
        let finish = Finish::new(claim, reply, result);
        let pool = self.pool.clone();
        self.finish_rounds.submit((), finish, move |(), finishes| finish_round(pool.clone(), finishes)).await
    }
}

/// A reply to store and its job to end: [`MessageStore::finish_reply`]'s arguments, owned, so
/// that a round can carry them.
pub struct Finish {
    job_id: uuid::Uuid,
    attempt: i32,
    result: Value,
    calls: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    shard: i16,
    message_id: uuid::Uuid,
    user_id: uuid::Uuid,
    character_id: uuid::Uuid,
    content: String,
    reply_to: uuid::Uuid,
    prompt_snapshot: String,
    truncated: bool,
    prompt_version: Option<String>,
    created_at: DateTime<Utc>,
}

impl Finish {
    pub fn new(claim: &Claim, reply: NewReply<'_>, result: &Value) -> Self {
        let (calls, prompt_tokens, completion_tokens) = super::usage::to_columns(claim.usage.total());
        Self {
            job_id: claim.job_id.0,
            attempt: claim.attempt,
            result: result.clone(),
            calls,
            prompt_tokens,
            completion_tokens,
            shard: super::usage::shard(claim.job_id),
            message_id: reply.message_id.0,
            user_id: reply.user_id.0,
            character_id: reply.character_id.0,
            content: reply.content.to_owned(),
            reply_to: reply.reply_to.0,
            prompt_snapshot: reply.prompt_snapshot.to_owned(),
            truncated: reply.truncated,
            prompt_version: reply.prompt_version.map(str::to_owned),
            created_at: reply.created_at,
        }
    }
}

/// Stores a round of finishes in one statement. If the database refuses the round's statement
/// (a deadlock, a reply whose message was deleted meanwhile), it wrote nothing, and each finish
/// is written again on its own, so that the refusal fails only the finish it concerns. Any
/// other error (the database unreachable) fails the round as a whole, at once.
async fn finish_round(pool: sqlx::PgPool, finishes: Vec<Finish>) -> Vec<StoreResult<Option<StoredReply>>> {
    let refused = |error: &sqlx::Error| matches!(error, sqlx::Error::Database(_));
    super::batch::write_or_each_alone(&finishes, |round| finish_replies(&pool, round), refused).await
}

/// The statement of [`finish_round`]: for each finish, in order, the job ends (and its usage is
/// added, as in `jobs::succeed`) only if the claim holds, the reply is inserted only if its job
/// ended, and the session layer's size comes back for the compression check (the statement's
/// snapshot does not see its own inserts, so the reply's length is added to the sum).
pub async fn finish_replies(
    db: impl PgExecutor<'_>,
    finishes: &[Finish],
) -> Result<Vec<Option<StoredReply>>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"with k as (
               select * from unnest($1::uuid[], $2::int4[], $3::jsonb[], $4::int8[], $5::int8[], $6::int8[],
                                    $7::int2[], $8::uuid[], $9::uuid[], $10::uuid[], $11::text[], $12::uuid[],
                                    $13::text[], $14::bool[], $15::text[], $16::timestamptz[])
                   with ordinality as k(job_id, attempt, result, calls, prompt_tokens, completion_tokens, shard,
                                        message_id, user_id, character_id, content, reply_to, prompt_snapshot,
                                        truncated, prompt_version, created_at, ord)
           ), ended as (
               update jobs j set status = 'succeeded', result = k.result, progress_done = j.progress_total,
                      lease_until = null, finished_at = now(), updated_at = now(),
                      usage_calls = j.usage_calls + k.calls,
                      usage_prompt_tokens = j.usage_prompt_tokens + k.prompt_tokens,
                      usage_completion_tokens = j.usage_completion_tokens + k.completion_tokens
               from k
               where j.job_id = k.job_id and j.attempts = k.attempt and j.status = 'running'
                 -- In id order, as every round over job rows locks them (`jobs::mark_published`).
                 and j.job_id in (select job_id from jobs where job_id = any($1) order by job_id for no key update)
               returning k.ord, j.user_id
           ), spent as (
               insert into llm_usage_daily (user_id, day, shard, calls, prompt_tokens, completion_tokens)
               select e.user_id, (now() at time zone 'utc')::date, k.shard,
                      sum(k.calls)::bigint, sum(k.prompt_tokens)::bigint, sum(k.completion_tokens)::bigint
               from ended e join k on k.ord = e.ord
               where k.calls > 0
               group by e.user_id, k.shard
               -- Rounds of two workers that touch the same counters lock them in one order, so
               -- they wait for each other instead of deadlocking.
               order by e.user_id, k.shard
               on conflict (user_id, day, shard) do update
               set calls = llm_usage_daily.calls + excluded.calls,
                   prompt_tokens = llm_usage_daily.prompt_tokens + excluded.prompt_tokens,
                   completion_tokens = llm_usage_daily.completion_tokens + excluded.completion_tokens
           ), stored as (
               insert into messages (message_id, user_id, character_id, author, content, job_id, reply_to,
                                     prompt_snapshot, truncated, prompt_version, created_at)
               select k.message_id, k.user_id, k.character_id, 'character', k.content, k.job_id, k.reply_to,
                      k.prompt_snapshot, k.truncated, k.prompt_version, k.created_at
               from k join ended e on e.ord = k.ord
               returning message_id, char_length(content) as chars
           )
           select k.ord as "ord!", s.chars as "reply_chars?",
                  (select coalesce(sum(char_length(content)), 0) from messages
                   where character_id = k.character_id and not compressed)::bigint as "earlier_chars!"
           from k left join stored s on s.message_id = k.message_id"#,
        &column(finishes, |f| f.job_id),
        &column(finishes, |f| f.attempt),
        &column(finishes, |f| &f.result) as &[&Value],
        &column(finishes, |f| f.calls),
        &column(finishes, |f| f.prompt_tokens),
        &column(finishes, |f| f.completion_tokens),
        &column(finishes, |f| f.shard),
        &column(finishes, |f| f.message_id),
        &column(finishes, |f| f.user_id),
        &column(finishes, |f| f.character_id),
        &column(finishes, |f| f.content.as_str()) as &[&str],
        &column(finishes, |f| f.reply_to),
        &column(finishes, |f| f.prompt_snapshot.as_str()) as &[&str],
        &column(finishes, |f| f.truncated),
        &column(finishes, |f| f.prompt_version.as_deref()) as &[Option<&str>],
        &column(finishes, |f| f.created_at),
    )
    .fetch_all(db)
    .await?;
    let stored = rows.into_iter().map(|row| {
        (row.ord, row.reply_chars.map(|chars| StoredReply { session_chars: row.earlier_chars + i64::from(chars) }))
    });
    Ok(by_position(finishes.len(), stored)?.into_iter().map(Option::flatten).collect())
}

/// How many messages of the session layer a chat reply's prompt is given to choose from (its
/// budget trims further): what a reply's claim reads with it ([`super::jobs::ClaimedContext`]).
pub const CHAT_SESSION_WINDOW: i64 = 200;

/// One reply's context to read ([`super::Store::chat_context`]): whose, which character, which
/// message. Both stores' rounds of context reads are keyed by it.
pub type ContextKey = (UserId, CharacterId, MessageId);

/// [`super::Store::chat_context`] for a round of replies in one statement (one snapshot, one
/// round-trip), one answer per key in order: the character, the user, the message, both memory
/// layers (as JSON, in layer and position order) and the session layer before the message (as
/// JSON, oldest first: the newest `session_limit` by [`uncompressed`]'s order, reversed), as the
/// `chat_reply_context` function defines them.
pub(crate) async fn chat_contexts(
    db: impl PgExecutor<'_>,
    keys: &[ContextKey],
    session_limit: i64,
) -> Result<Vec<Option<super::ChatContext>>, sqlx::Error> {
    let rows = sqlx::query_as!(
        super::ContextRow,
        r#"select k.ord as "ord!", x.character_id as "character_id!: CharacterId", x.user_id as "user_id!: UserId",
                  x.character_user_id as "character_user_id!: UserId", x.name as "name!", x.status as "status!",
                  x.source as "source!", x.profile, x.brief, x.language as "language!", x.prompt_version,
                  x.source_snapshot, x.version as "version!", x.created_at as "created_at!",
                  x.updated_at as "updated_at!", x.memory_version as "memory_version!",
                  x.username as "username!", x.bio as "bio!", x.ctx_max_chat as "ctx_max_chat!",
                  x.ctx_max_stm as "ctx_max_stm!", x.ctx_max_ltm as "ctx_max_ltm!",
                  x.max_group_rounds as "max_group_rounds!", x.user_language as "user_language!",
                  x.is_admin as "is_admin!", x.user_created_at as "user_created_at!", x.message as "message!",
                  x.memories as "memories!", x.session as "session!"
           from unnest($1::uuid[], $2::uuid[], $3::uuid[]) with ordinality as k(user_id, character_id, message_id, ord)
           cross join lateral chat_reply_context(k.user_id, k.character_id, k.message_id, $4) x"#,
        &column(keys, |(user_id, _, _)| user_id.0),
        &column(keys, |(_, character_id, _)| character_id.0),
        &column(keys, |(_, _, message_id)| message_id.0),
        session_limit,
    )
    .fetch_all(db)
    .await?;
    let contexts = rows.into_iter().map(super::ContextRow::into_context).collect::<Result<Vec<_>, _>>()?;
    // A key whose character, user or message is gone has no row: its answer stays `None`.
    by_position(keys.len(), contexts)
}

impl PgStore {
    /// Writes `round` in one statement, as if submitted one after another in that order: a
    /// message is stored, with its job, if its character is its user's and ready and that
    /// user's active jobs, those admitted before it in the round included, stay within the cap.
    /// A round may hold several users' messages; each user's quota lock is held for that
    /// statement and its commit only, and the users are locked in id order
    /// (`quota_active_jobs_of`). The characters are locked `for key share`, so that only a
    /// delete conflicts (it then makes the character missing rather than failing the insert)
    /// and a message neither waits for nor holds up an edit of the profile.
    ///
    /// Public for the tests that write a round of several users directly.
    pub async fn insert_messages(&self, round: &[QueuedMessage], quota: &Quota) -> StoreResult<Vec<Submitted>> {
        let jobs = JobColumns::of(round, |queued| &queued.job);
        let mut users = column(round, |queued| queued.user_id.0);
        users.sort_unstable();
        users.dedup();
        let outcomes = sqlx::query!(
            r#"with usage as materialized (select * from quota_active_jobs_of($1)),
                    submitted as materialized (
                        select * from unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::timestamptz[],
                                             $7::uuid[], $8::text[], $9::text[], $10::text[], $11::bytea[])
                            with ordinality as submitted (user_id, message_id, character_id, content, created_at,
                                                          job_id, kind, serial_key, idempotency_key,
                                                          request_fingerprint, position)
                    ),
                    subject as materialized (
                        select character_id, user_id from characters
                        where character_id = any($4) and user_id = any($1) and status = 'ready'
                        for key share
                    ),
                    ranked as materialized (
                        select submitted.*, subject.character_id is not null as ready,
                               usage.active_jobs + count(subject.character_id)
                                   over (partition by submitted.user_id order by submitted.position) as held
                        from submitted
                        join usage on usage.quota_user_id = submitted.user_id
                        left join subject on subject.character_id = submitted.character_id
                                         and subject.user_id = submitted.user_id
                    ),
                    admitted as materialized (select * from ranked where ready and held <= $12),
                    message as (
                        insert into messages (message_id, user_id, character_id, author, content, created_at)
                        select message_id, user_id, character_id, 'user', content, created_at from admitted
                    ),
                    job as (
                        insert into jobs (job_id, user_id, kind, character_id, message_id, serial_key,
                                          idempotency_key, request_fingerprint)
                        select job_id, user_id, kind, character_id, message_id, serial_key, idempotency_key,
                               request_fingerprint
                        from admitted
                    )
               select ready as "ready!", held as "held!" from ranked order by position"#,
            &users,
            &column(round, |queued| queued.user_id.0),
            &column(round, |queued| queued.message_id.0),
            &column(round, |queued| queued.character_id.0),
            &column(round, |queued| queued.content.as_str()) as &[&str],
            &column(round, |queued| queued.created_at),
            &jobs.job_id,
            &jobs.kind as &[&str],
            &jobs.serial_key as &[Option<&str>],
            &jobs.idempotency_key as &[Option<&str>],
            &jobs.request_fingerprint as &[Option<&[u8]>],
            quota.limit(Capped::ActiveJobs),
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| {
            if row.ready {
                // `held` counts this message's job: what the user held before it is one less.
                Self::submitted(vec![(Capped::ActiveJobs, row.held - 1)], quota)
            } else {
                Submitted::GuardFailed
            }
        })
        .collect::<Vec<_>>();
        Ok(outcomes)
    }
}
