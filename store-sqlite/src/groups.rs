//! Groups, their members (by character id) and their transcript (mirrors
//! `fastnpc_shared::store::groups`). Owner-scoped wherever the API reads; members are always the
//! owner's own characters (checked on insert).
//!
//! Translations: `= any($3)` is an `in` over `json_each` of a JSON array of hex ids; `delete ...
//! using` (not in SQLite) is a `delete` whose `where` checks the owner through a subquery; `is not
//! distinct from` is SQLite's `is`.

use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::{CharacterId, GroupId, JobId, MessageId, UserId},
    store::groups::{GroupMessageRecord, GroupRecord, Member, NewGroupMessage},
};
use serde_json::Value;
use sqlx::SqliteExecutor;

use crate::SqliteStore;
use crate::begin_immediate;
use crate::jobs;
use crate::store::insert_submitted_job;
use crate::store::over_quota;
use crate::{id_list, now};
use fastnpc_shared::store::Capped;
use fastnpc_shared::store::Quota;
use fastnpc_shared::store::StoreResult;
use fastnpc_shared::store::Submitted;
use fastnpc_shared::store::groups::GroupStore;
use fastnpc_shared::store::jobs::Claim;
use fastnpc_shared::store::jobs::NewJob;

pub async fn insert(
    db: impl SqliteExecutor<'_>,
    group_id: GroupId,
    user_id: UserId,
    name: &str,
) -> Result<(), sqlx::Error> {
    let now = now();
    sqlx::query!(
        "insert into groups (group_id, user_id, name, created_at, updated_at) values (?1, ?2, ?3, ?4, ?4)",
        group_id.0,
        user_id.0,
        name,
        now,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Adds the user's own characters to the user's group. Returns how many were added (ids that are
/// not the user's characters, or already members, are skipped: compare with the input). A new
/// member's memory starts at the group's newest message.
pub async fn add_members(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    group_id: GroupId,
    character_ids: &[CharacterId],
) -> Result<u64, sqlx::Error> {
    let now = now();
    let ids = id_list(character_ids.iter().map(|id| id.0));
    // `where` is required before `on conflict` in an `insert ... select` (SQLite's parser would
    // otherwise read `on` as a join constraint); this one has it.
    let result = sqlx::query!(
        "insert into group_members (group_id, character_id, joined_at, absorbed_upto)
         select g.group_id, c.character_id, ?4,
                (select gm.message_id from group_messages gm where gm.group_id = g.group_id
                 order by gm.message_id desc limit 1)
         from groups g join characters c on c.user_id = g.user_id
         where g.group_id = ?1 and g.user_id = ?2 and c.character_id in (select unhex(value) from json_each(?3))
         on conflict do nothing",
        group_id.0,
        user_id.0,
        ids,
        now,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// How many of `character_ids` are characters of the user's.
pub async fn count_owned_characters(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    character_ids: &[CharacterId],
) -> Result<i64, sqlx::Error> {
    let ids = id_list(character_ids.iter().map(|id| id.0));
    let row = sqlx::query!(
        r#"select count(*) as "count!: i64" from characters
           where user_id = ?1 and character_id in (select unhex(value) from json_each(?2))"#,
        user_id.0,
        ids,
    )
    .fetch_one(db)
    .await?;
    Ok(row.count)
}

pub async fn remove_member(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    group_id: GroupId,
    character_id: CharacterId,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        "delete from group_members
         where group_id = ?1 and character_id = ?3
           and exists (select 1 from groups g where g.group_id = ?1 and g.user_id = ?2)",
        group_id.0,
        user_id.0,
        character_id.0,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn get(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    group_id: GroupId,
) -> Result<Option<GroupRecord>, sqlx::Error> {
    sqlx::query_as!(
        GroupRecord,
        r#"select group_id as "group_id!: GroupId", name, created_at as "created_at: DateTime<Utc>",
                  updated_at as "updated_at: DateTime<Utc>"
           from groups
           where group_id = ?1 and user_id = ?2"#,
        group_id.0,
        user_id.0,
    )
    .fetch_optional(db)
    .await
}

pub async fn list(db: impl SqliteExecutor<'_>, user_id: UserId) -> Result<Vec<GroupRecord>, sqlx::Error> {
    sqlx::query_as!(
        GroupRecord,
        r#"select group_id as "group_id!: GroupId", name, created_at as "created_at: DateTime<Utc>",
                  updated_at as "updated_at: DateTime<Utc>"
           from groups
           where user_id = ?1 order by group_id desc"#,
        user_id.0,
    )
    .fetch_all(db)
    .await
}

pub async fn rename(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    group_id: GroupId,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let now = now();
    let result = sqlx::query!(
        "update groups set name = ?3, updated_at = ?4 where group_id = ?1 and user_id = ?2",
        group_id.0,
        user_id.0,
        name,
        now,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn delete(db: impl SqliteExecutor<'_>, user_id: UserId, group_id: GroupId) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!("delete from groups where group_id = ?1 and user_id = ?2", group_id.0, user_id.0)
        .execute(db)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// The group's members, in the order they joined.
pub async fn members(db: impl SqliteExecutor<'_>, group_id: GroupId) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query_as!(
        Member,
        r#"select c.character_id as "character_id!: CharacterId", c.name, c.brief, c.profile as "profile: Value",
                  c.status, c.language, m.absorbed_upto as "absorbed_upto: MessageId"
           from group_members m join characters c on c.character_id = m.character_id
           where m.group_id = ?1
           order by m.joined_at, c.character_id"#,
        group_id.0,
    )
    .fetch_all(db)
    .await
}

pub async fn insert_message(db: impl SqliteExecutor<'_>, message: NewGroupMessage<'_>) -> Result<(), sqlx::Error> {
    let now = now();
    let author = if message.character_id.is_some() { "character" } else { "user" };
    let character_id = message.character_id.map(|id| id.0);
    let (job_id, round) = message.job_round.map(|(job, round)| (job.0, round)).unzip();
    sqlx::query!(
        "insert into group_messages (message_id, group_id, user_id, author, character_id, speaker_name, content,
                                     moderator, prompt_snapshot, job_id, round, truncated, prompt_version, created_at)
         values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        message.message_id.0,
        message.group_id.0,
        message.user_id.0,
        author,
        character_id,
        message.speaker_name,
        message.content,
        message.moderator,
        message.prompt_snapshot,
        job_id,
        round,
        message.truncated,
        message.prompt_version,
        now,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A page of the transcript, newest first.
pub async fn history(
    db: impl SqliteExecutor<'_>,
    group_id: GroupId,
    before: Option<MessageId>,
    limit: i64,
) -> Result<Vec<GroupMessageRecord>, sqlx::Error> {
    let before = before.map(|id| id.0);
    sqlx::query_as!(
        GroupMessageRecord,
        r#"select message_id as "message_id!: MessageId", author, character_id as "character_id: CharacterId",
                  speaker_name, content, moderator as "moderator: Value", prompt_snapshot,
                  job_id as "job_id: JobId", round as "round: i32", truncated as "truncated: bool", prompt_version,
                  created_at as "created_at: DateTime<Utc>"
           from group_messages
           where group_id = ?1 and (?2 is null or message_id < ?2)
           order by message_id desc
           limit ?3"#,
        group_id.0,
        before,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Messages after `after` (all when `None`), oldest first, at most `limit`.
pub async fn messages_after(
    db: impl SqliteExecutor<'_>,
    group_id: GroupId,
    after: Option<MessageId>,
    limit: i64,
) -> Result<Vec<GroupMessageRecord>, sqlx::Error> {
    let after = after.map(|id| id.0);
    sqlx::query_as!(
        GroupMessageRecord,
        r#"select message_id as "message_id!: MessageId", author, character_id as "character_id: CharacterId",
                  speaker_name, content, moderator as "moderator: Value", prompt_snapshot,
                  job_id as "job_id: JobId", round as "round: i32", truncated as "truncated: bool", prompt_version,
                  created_at as "created_at: DateTime<Utc>"
           from group_messages
           where group_id = ?1 and (?2 is null or message_id > ?2)
           order by message_id
           limit ?3"#,
        group_id.0,
        after,
        limit,
    )
    .fetch_all(db)
    .await
}

/// How many messages, and how many characters, follow `after` (all when `None`): a member's
/// unabsorbed part of the transcript.
pub async fn pending_size(
    db: impl SqliteExecutor<'_>,
    group_id: GroupId,
    after: Option<MessageId>,
) -> Result<(i64, i64), sqlx::Error> {
    let after = after.map(|id| id.0);
    let row = sqlx::query!(
        r#"select count(*) as "count!: i64", coalesce(sum(length(content)), 0) as "chars!: i64"
           from group_messages where group_id = ?1 and (?2 is null or message_id > ?2)"#,
        group_id.0,
        after,
    )
    .fetch_one(db)
    .await?;
    Ok((row.count, row.chars))
}

/// The rounds a turn job already stored (a redelivered job continues after them).
pub async fn rounds_done(db: impl SqliteExecutor<'_>, job_id: JobId) -> Result<i32, sqlx::Error> {
    let row = sqlx::query!(
        r#"select coalesce(max(round), 0) as "rounds!: i32" from group_messages where job_id = ?1"#,
        job_id.0
    )
    .fetch_one(db)
    .await?;
    Ok(row.rounds)
}

/// Moves a member's memory cursor, if it is still where the caller read it.
pub async fn advance_absorbed(
    db: impl SqliteExecutor<'_>,
    group_id: GroupId,
    character_id: CharacterId,
    from: Option<MessageId>,
    to: MessageId,
) -> Result<bool, sqlx::Error> {
    let from = from.map(|id| id.0);
    let result = sqlx::query!(
        "update group_members set absorbed_upto = ?4
         where group_id = ?1 and character_id = ?2 and absorbed_upto is ?3",
        group_id.0,
        character_id.0,
        from,
        to.0,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The user message that started a turn job: created in the same transaction, just before the
/// job's id (UUIDv7s of one process increase).
pub async fn message_of_turn(
    db: impl SqliteExecutor<'_>,
    group_id: GroupId,
    job_id: JobId,
) -> Result<Option<GroupMessageRecord>, sqlx::Error> {
    sqlx::query_as!(
        GroupMessageRecord,
        r#"select message_id as "message_id!: MessageId", author, character_id as "character_id: CharacterId",
                  speaker_name, content, moderator as "moderator: Value", prompt_snapshot,
                  job_id as "job_id: JobId", round as "round: i32", truncated as "truncated: bool", prompt_version,
                  created_at as "created_at: DateTime<Utc>"
           from group_messages
           where group_id = ?1 and author = 'user' and message_id < ?2
           order by message_id desc
           limit 1"#,
        group_id.0,
        job_id.0,
    )
    .fetch_optional(db)
    .await
}

/// How many groups the user has.
pub async fn count(db: impl SqliteExecutor<'_>, user_id: UserId) -> Result<i64, sqlx::Error> {
    let row = sqlx::query!(r#"select count(*) as "count!: i64" from groups where user_id = ?1"#, user_id.0)
        .fetch_one(db)
        .await?;
    Ok(row.count)
}

#[async_trait::async_trait]
impl GroupStore for SqliteStore {
    async fn create_group(
        &self,
        group_id: GroupId,
        user_id: UserId,
        name: &str,
        members: &[CharacterId],
        quota: &Quota,
    ) -> StoreResult<Submitted> {
        let mut tx = begin_immediate(&self.writer).await?;
        insert(&mut *tx, group_id, user_id, name).await?;
        add_members(&mut *tx, user_id, group_id, members).await?;
        if let Some(cap) = over_quota(&mut tx, user_id, quota, &[Capped::Groups]).await? {
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
        rename(&self.writer, user_id, group_id, name).await
    }

    async fn delete_group(&self, user_id: UserId, group_id: GroupId) -> StoreResult<bool> {
        delete(&self.writer, user_id, group_id).await
    }

    async fn add_group_members(
        &self,
        user_id: UserId,
        group_id: GroupId,
        character_ids: &[CharacterId],
    ) -> StoreResult<u64> {
        add_members(&self.writer, user_id, group_id, character_ids).await
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
        remove_member(&self.writer, user_id, group_id, character_id).await
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
        let mut tx = begin_immediate(&self.writer).await?;
        insert_message(&mut *tx, message).await?;
        if let Err(taken) = insert_submitted_job(&mut tx, job).await? {
            return Ok(taken);
        }
        if let Some(cap) = over_quota(&mut tx, user_id, quota, &[Capped::ActiveJobs]).await? {
            return Ok(Submitted::OverQuota(cap));
        }
        tx.commit().await?;
        Ok(Submitted::Created)
    }

    async fn store_group_reply(&self, claim: &Claim, message: NewGroupMessage<'_>, round: i32) -> StoreResult<bool> {
        let mut tx = begin_immediate(&self.writer).await?;
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
