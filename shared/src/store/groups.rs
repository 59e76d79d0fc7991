//! Groups, their members (by character id) and their transcript. Owner-scoped wherever the API
//! reads; members are always the owner's own characters (checked on insert).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

use super::Capped;
use super::PgStore;
use super::Quota;
use super::StoreResult;
use super::Submitted;
use super::jobs;
use super::jobs::Claim;
use super::jobs::NewJob;
use crate::ids::{CharacterId, GroupId, JobId, MessageId, UserId};

#[derive(Clone, Debug)]
pub struct GroupRecord {
    pub group_id: GroupId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A member as the turn loop and the API need it.
#[derive(Clone, Debug)]
pub struct Member {
    pub character_id: CharacterId,
    pub name: String,
    pub brief: Option<String>,
    pub profile: Option<Value>,
    pub status: String,
    /// `zh` or `en`: the character's language (`characters.language`), the one it speaks in.
    pub language: String,
    /// Group messages up to this id are in the member's memory.
    pub absorbed_upto: Option<MessageId>,
}

/// A group message.
#[derive(Clone, Debug)]
pub struct GroupMessageRecord {
    pub message_id: MessageId,
    pub author: String,
    pub character_id: Option<CharacterId>,
    pub speaker_name: String,
    pub content: String,
    pub moderator: Option<Value>,
    pub prompt_snapshot: Option<String>,
    pub job_id: Option<JobId>,
    pub round: Option<i32>,
    /// For character messages: the model stopped at the output limit, so the text is cut.
    pub truncated: bool,
    /// For character messages: the prompt set that wrote it (none before prompts had versions).
    pub prompt_version: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub(crate) async fn insert(
    db: impl PgExecutor<'_>,
    group_id: GroupId,
    user_id: UserId,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!("insert into groups (group_id, user_id, name) values ($1, $2, $3)", group_id.0, user_id.0, name)
        .execute(db)
        .await?;
    Ok(())
}

/// Adds the user's own characters to the user's group. Returns how many were added (ids that are
/// not the user's characters, or already members, are skipped: compare with the input). A new
/// member's memory starts at the group's newest message: it does not remember what was said
/// before it joined (and a member that left and came back does not remember things twice).
pub(crate) async fn add_members(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    group_id: GroupId,
    character_ids: &[CharacterId],
) -> Result<u64, sqlx::Error> {
    let ids: Vec<uuid::Uuid> = character_ids.iter().map(|id| id.0).collect();
    let result = sqlx::query!(
        "insert into group_members (group_id, character_id, absorbed_upto)
         select g.group_id, c.character_id,
                (select gm.message_id from group_messages gm where gm.group_id = g.group_id
                 order by gm.message_id desc limit 1)
         from groups g join characters c on c.user_id = g.user_id
         where g.group_id = $1 and g.user_id = $2 and c.character_id = any($3)
         on conflict do nothing",
        group_id.0,
        user_id.0,
        &ids,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// How many of `character_ids` are characters of the user's.
pub(crate) async fn count_owned_characters(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    character_ids: &[CharacterId],
) -> Result<i64, sqlx::Error> {
    let ids: Vec<uuid::Uuid> = character_ids.iter().map(|id| id.0).collect();
    let row = sqlx::query!(
        r#"select count(*) as "count!" from characters where user_id = $1 and character_id = any($2)"#,
        user_id.0,
        &ids,
    )
    .fetch_one(db)
    .await?;
    Ok(row.count)
}

pub(crate) async fn remove_member(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    group_id: GroupId,
    character_id: CharacterId,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        "delete from group_members m using groups g
         where m.group_id = g.group_id and g.group_id = $1 and g.user_id = $2 and m.character_id = $3",
        group_id.0,
        user_id.0,
        character_id.0,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub(crate) async fn get(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    group_id: GroupId,
) -> Result<Option<GroupRecord>, sqlx::Error> {
    sqlx::query_as!(
        GroupRecord,
        r#"select group_id as "group_id: GroupId", name, created_at, updated_at from groups
           where group_id = $1 and user_id = $2"#,
        group_id.0,
        user_id.0,
    )
    .fetch_optional(db)
    .await
}

pub(crate) async fn list(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Vec<GroupRecord>, sqlx::Error> {
    sqlx::query_as!(
        GroupRecord,
        r#"select group_id as "group_id: GroupId", name, created_at, updated_at from groups
           where user_id = $1 order by group_id desc"#,
        user_id.0,
    )
    .fetch_all(db)
    .await
}

pub(crate) async fn rename(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    group_id: GroupId,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        "update groups set name = $3, updated_at = now() where group_id = $1 and user_id = $2",
        group_id.0,
        user_id.0,
        name,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub(crate) async fn delete(db: impl PgExecutor<'_>, user_id: UserId, group_id: GroupId) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!("delete from groups where group_id = $1 and user_id = $2", group_id.0, user_id.0)
        .execute(db)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// The group's members, in the order they joined.
pub(crate) async fn members(db: impl PgExecutor<'_>, group_id: GroupId) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query_as!(
        Member,
        r#"select c.character_id as "character_id: CharacterId", c.name, c.brief, c.profile, c.status,
                  c.language, m.absorbed_upto as "absorbed_upto: MessageId"
           from group_members m join characters c on c.character_id = m.character_id
           where m.group_id = $1
           order by m.joined_at, c.character_id"#,
        group_id.0,
    )
    .fetch_all(db)
    .await
}

/// A new group message.
pub struct NewGroupMessage<'a> {
    pub message_id: MessageId,
    pub group_id: GroupId,
    pub user_id: UserId,
    /// `None` for the user's own message.
    pub character_id: Option<CharacterId>,
    pub speaker_name: &'a str,
    pub content: &'a str,
    pub moderator: Option<&'a Value>,
    pub prompt_snapshot: Option<&'a str>,
    pub job_round: Option<(JobId, i32)>,
    /// A character's reply that stopped at the output limit.
    pub truncated: bool,
    /// The prompt set that wrote a character's reply.
    pub prompt_version: Option<&'a str>,
}

pub(crate) async fn insert_message(db: impl PgExecutor<'_>, message: NewGroupMessage<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into group_messages (message_id, group_id, user_id, author, character_id, speaker_name, content,
                                     moderator, prompt_snapshot, job_id, round, truncated, prompt_version)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        message.message_id.0,
        message.group_id.0,
        message.user_id.0,
        if message.character_id.is_some() { "character" } else { "user" },
        message.character_id.map(|id| id.0),
        message.speaker_name,
        message.content,
        message.moderator,
        message.prompt_snapshot,
        message.job_round.map(|(job, _)| job.0),
        message.job_round.map(|(_, round)| round),
        message.truncated,
        message.prompt_version,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A page of the transcript, newest first.
pub(crate) async fn history(
    db: impl PgExecutor<'_>,
    group_id: GroupId,
    before: Option<MessageId>,
    limit: i64,
) -> Result<Vec<GroupMessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        GroupMessageRecord,
        r#"select message_id as "message_id: MessageId", author, character_id as "character_id: CharacterId",
                  speaker_name, content, moderator, prompt_snapshot, job_id as "job_id: JobId", round, truncated,
                  prompt_version, created_at
           from group_messages
           where group_id = $1 and ($2::uuid is null or message_id < $2)
           order by message_id desc
           limit $3"#,
        group_id.0,
        before.map(|id| id.0),
        limit,
    )
    .fetch_all(db)
    .await
}

/// Messages after `after` (all when `None`), oldest first, at most `limit`.
pub(crate) async fn messages_after(
    db: impl PgExecutor<'_>,
    group_id: GroupId,
    after: Option<MessageId>,
    limit: i64,
) -> Result<Vec<GroupMessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        GroupMessageRecord,
        r#"select message_id as "message_id: MessageId", author, character_id as "character_id: CharacterId",
                  speaker_name, content, moderator, prompt_snapshot, job_id as "job_id: JobId", round, truncated,
                  prompt_version, created_at
           from group_messages
           where group_id = $1 and ($2::uuid is null or message_id > $2)
           order by message_id
           limit $3"#,
        group_id.0,
        after.map(|id| id.0),
        limit,
    )
    .fetch_all(db)
    .await
}

/// How many messages, and how many characters, follow `after` (all when `None`): a member's
/// unabsorbed part of the transcript.
pub(crate) async fn pending_size(
    db: impl PgExecutor<'_>,
    group_id: GroupId,
    after: Option<MessageId>,
) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query!(
        r#"select count(*) as "count!", coalesce(sum(char_length(content)), 0)::bigint as "chars!"
           from group_messages where group_id = $1 and ($2::uuid is null or message_id > $2)"#,
        group_id.0,
        after.map(|id| id.0),
    )
    .fetch_one(db)
    .await?;
    Ok((row.count, row.chars))
}

/// The rounds a turn job already stored (a redelivered job continues after them).
pub(crate) async fn rounds_done(db: impl PgExecutor<'_>, job_id: JobId) -> Result<i32, sqlx::Error> {
    let row =
        sqlx::query!(r#"select coalesce(max(round), 0) as "rounds!" from group_messages where job_id = $1"#, job_id.0)
            .fetch_one(db)
            .await?;
    Ok(row.rounds)
}

/// Moves a member's memory cursor, if it is still where the caller read it.
pub(crate) async fn advance_absorbed(
    db: impl PgExecutor<'_>,
    group_id: GroupId,
    character_id: CharacterId,
    from: Option<MessageId>,
    to: MessageId,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        "update group_members set absorbed_upto = $4
         where group_id = $1 and character_id = $2 and absorbed_upto is not distinct from $3",
        group_id.0,
        character_id.0,
        from.map(|id| id.0),
        to.0,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The user message that started a turn job: created in the same transaction, just before the
/// job's id (UUIDv7s of one process increase).
pub(crate) async fn message_of_turn(
    db: impl PgExecutor<'_>,
    group_id: GroupId,
    job_id: JobId,
) -> Result<Option<GroupMessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        GroupMessageRecord,
        r#"select message_id as "message_id: MessageId", author, character_id as "character_id: CharacterId",
                  speaker_name, content, moderator, prompt_snapshot, job_id as "job_id: JobId", round, truncated,
                  prompt_version, created_at
           from group_messages
           where group_id = $1 and author = 'user' and message_id < $2
           order by message_id desc
           limit 1"#,
        group_id.0,
        job_id.0,
    )
    .fetch_optional(db)
    .await
}

/// Group chats: groups, members, messages and the turn loop's writes.
#[async_trait::async_trait]
pub trait GroupStore: Send + Sync {
    /// A group with its first members (the user's own characters only), together: `Created` or
    /// `OverQuota`.
    async fn create_group(
        &self,
        group_id: GroupId,
        user_id: UserId,
        name: &str,
        members: &[CharacterId],
        quota: &Quota,
    ) -> StoreResult<Submitted>;
    async fn group(&self, user_id: UserId, group_id: GroupId) -> StoreResult<Option<GroupRecord>>;
    async fn list_groups(&self, user_id: UserId) -> StoreResult<Vec<GroupRecord>>;
    async fn rename_group(&self, user_id: UserId, group_id: GroupId, name: &str) -> StoreResult<bool>;
    async fn delete_group(&self, user_id: UserId, group_id: GroupId) -> StoreResult<bool>;
    /// Adds the user's own characters; returns how many were added.
    async fn add_group_members(
        &self,
        user_id: UserId,
        group_id: GroupId,
        character_ids: &[CharacterId],
    ) -> StoreResult<u64>;
    async fn count_owned_characters(&self, user_id: UserId, character_ids: &[CharacterId]) -> StoreResult<i64>;
    async fn remove_group_member(
        &self,
        user_id: UserId,
        group_id: GroupId,
        character_id: CharacterId,
    ) -> StoreResult<bool>;
    async fn group_members(&self, group_id: GroupId) -> StoreResult<Vec<Member>>;
    /// A user's group message and the turn job it starts, together.
    async fn submit_group_message(
        &self,
        message: NewGroupMessage<'_>,
        job: NewJob<'_>,
        quota: &Quota,
    ) -> StoreResult<Submitted>;
    /// Stores a member's reply and records the round as the job's progress, together; false
    /// when the claim was lost (nothing written).
    async fn store_group_reply(&self, claim: &Claim, message: NewGroupMessage<'_>, round: i32) -> StoreResult<bool>;
    async fn group_history(
        &self,
        group_id: GroupId,
        before: Option<MessageId>,
        limit: i64,
    ) -> StoreResult<Vec<GroupMessageRecord>>;
    async fn group_messages_after(
        &self,
        group_id: GroupId,
        after: Option<MessageId>,
        limit: i64,
    ) -> StoreResult<Vec<GroupMessageRecord>>;
    /// Messages after `after`, and their total characters.
    async fn group_pending_size(&self, group_id: GroupId, after: Option<MessageId>) -> StoreResult<(i64, i64)>;
    async fn group_rounds_done(&self, job_id: JobId) -> StoreResult<i32>;
    async fn group_message_of_turn(&self, group_id: GroupId, job_id: JobId) -> StoreResult<Option<GroupMessageRecord>>;
}

#[async_trait::async_trait]
impl GroupStore for PgStore {
    async fn create_group(
        &self,
        group_id: GroupId,
        user_id: UserId,
        name: &str,
        members: &[CharacterId],
        quota: &Quota,
    ) -> StoreResult<Submitted> {
        let mut tx = self.pool.begin().await?;
        insert(&mut *tx, group_id, user_id, name).await?;
        add_members(&mut *tx, user_id, group_id, members).await?;
        if let Some(cap) = Self::over_quota(&mut tx, user_id, quota, &[Capped::Groups]).await? {
            return Ok(Submitted::OverQuota(cap));
        }
        tx.commit().await?;
        Ok(Submitted::Created)
    }

    async fn group(&self, user_id: UserId, group_id: GroupId) -> StoreResult<Option<GroupRecord>> {
        get(&self.pool, user_id, group_id).await
    }

    async fn list_groups(&self, user_id: UserId) -> StoreResult<Vec<GroupRecord>> {
        list(&self.pool, user_id).await
    }

    async fn rename_group(&self, user_id: UserId, group_id: GroupId, name: &str) -> StoreResult<bool> {
        rename(&self.pool, user_id, group_id, name).await
    }

    async fn delete_group(&self, user_id: UserId, group_id: GroupId) -> StoreResult<bool> {
        delete(&self.pool, user_id, group_id).await
    }

    async fn add_group_members(
        &self,
        user_id: UserId,
        group_id: GroupId,
        character_ids: &[CharacterId],
    ) -> StoreResult<u64> {
        add_members(&self.pool, user_id, group_id, character_ids).await
    }

    async fn count_owned_characters(&self, user_id: UserId, character_ids: &[CharacterId]) -> StoreResult<i64> {
        count_owned_characters(&self.pool, user_id, character_ids).await
    }

    async fn remove_group_member(
        &self,
        user_id: UserId,
        group_id: GroupId,
        character_id: CharacterId,
    ) -> StoreResult<bool> {
        remove_member(&self.pool, user_id, group_id, character_id).await
    }

    async fn group_members(&self, group_id: GroupId) -> StoreResult<Vec<Member>> {
        members(&self.pool, group_id).await
    }

    async fn submit_group_message(
        &self,
        message: NewGroupMessage<'_>,
        job: NewJob<'_>,
        quota: &Quota,
    ) -> StoreResult<Submitted> {
        let user_id = job.user_id;
        let mut tx = self.pool.begin().await?;
        insert_message(&mut *tx, message).await?;
        if let Err(taken) = Self::insert_submitted_job(&mut tx, job).await? {
            return Ok(taken);
        }
        if let Some(cap) = Self::over_quota(&mut tx, user_id, quota, &[Capped::ActiveJobs]).await? {
            return Ok(Submitted::OverQuota(cap));
        }
        tx.commit().await?;
        Ok(Submitted::Created)
    }

    async fn store_group_reply(&self, claim: &Claim, message: NewGroupMessage<'_>, round: i32) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        insert_message(&mut *tx, message).await?;
        // Also proves the claim is still ours: a worker that lost it stores nothing.
        if !jobs::set_progress(&mut *tx, claim, round).await? {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn group_history(
        &self,
        group_id: GroupId,
        before: Option<MessageId>,
        limit: i64,
    ) -> StoreResult<Vec<GroupMessageRecord>> {
        history(&self.pool, group_id, before, limit).await
    }

    async fn group_messages_after(
        &self,
        group_id: GroupId,
        after: Option<MessageId>,
        limit: i64,
    ) -> StoreResult<Vec<GroupMessageRecord>> {
        messages_after(&self.pool, group_id, after, limit).await
    }

    async fn group_pending_size(&self, group_id: GroupId, after: Option<MessageId>) -> StoreResult<(i64, i64)> {
        pending_size(&self.pool, group_id, after).await
    }

    async fn group_rounds_done(&self, job_id: JobId) -> StoreResult<i32> {
        rounds_done(&self.pool, job_id).await
    }

    async fn group_message_of_turn(&self, group_id: GroupId, job_id: JobId) -> StoreResult<Option<GroupMessageRecord>> {
        message_of_turn(&self.pool, group_id, job_id).await
    }
}
