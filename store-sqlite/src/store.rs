//! The SQLite adapter of the store port (`fastnpc_shared::store::Store`): the embedded mode's
//! store, delegating to this crate's query functions exactly as `PgStore` delegates to the
//! Postgres ones. The units of work run in `BEGIN IMMEDIATE` transactions ([`begin_immediate`]),
//! SQLite's stand-in for the row locks the Postgres adapter relies on.

use std::{path::Path, time::Duration};

use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::{CharacterId, GroupId, JobId, MessageId, UserId},
    jobs::{JobError, JobKind, JobStatus},
    store::{
        Absorbed, Capped, CompressionCommit, MemoryWrite, NewCharacter, NewUserMessage, Quota, ReplyResult, RetryGuard,
        Store, StoreResult, Submitted, SystemStats,
        api_keys::ApiKeyRecord,
        characters::{CharacterRecord, CharacterSummary},
        groups::{GroupMessageRecord, GroupRecord, Member, NewGroupMessage},
        jobs::{CancelOutcome, Claim, Heartbeat, JobRecord, NewJob},
        memories::{Memories, MemoryEntry},
        messages::{MessageRecord, NewReply},
        transfer::{ExportRefusal, Imported, UserExport},
        usage::DailyUsage,
        users::{AccountSummary, Credentials, SettingsPatch, UserRecord},
    },
};
use serde_json::Value;
use sqlx::SqlitePool;

use crate::{
    api_keys, begin_immediate, characters, export, groups, is_unique_violation, jobs, memories, messages, stats, usage,
    users,
};

/// The store over one SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub async fn open(path: &Path, max_connections: u32) -> Result<Self, anyhow::Error> {
        let pool = crate::connect(path, max_connections).await?;
        crate::migrate(&pool).await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Deletes the event logs of jobs that finished before `older_than` (see
    /// [`crate::events::prune`]); returns how many events went.
    pub async fn prune_events(&self, older_than: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        crate::events::prune(&self.pool, older_than).await
    }
}

/// Inserts a job in `tx`; a reused idempotency key becomes [`Submitted::IdempotencyKeyTaken`].
async fn insert_submitted_job(tx: &mut sqlx::SqliteConnection, job: NewJob<'_>) -> StoreResult<Result<(), Submitted>> {
    match jobs::insert(&mut *tx, job).await {
        Ok(()) => Ok(Ok(())),
        Err(error) if is_unique_violation(&error, fastnpc_shared::store::jobs::IDEMPOTENCY_KEY) => {
            Ok(Err(Submitted::IdempotencyKeyTaken))
        }
        Err(error) => Err(error),
    }
}

/// The first of `caps` that the rows written so far in `tx` took the user past. No lock of its
/// own: `tx` is a `BEGIN IMMEDIATE` transaction, so no other submission writes in between.
async fn over_quota(
    tx: &mut sqlx::SqliteConnection,
    user_id: UserId,
    quota: &Quota,
    caps: &[Capped],
) -> StoreResult<Option<Capped>> {
    let mut counts = Vec::with_capacity(caps.len());
    for &cap in caps {
        let count = match cap {
            Capped::ActiveJobs => jobs::active_count(&mut *tx, user_id).await?,
            Capped::Characters => characters::count(&mut *tx, user_id).await?,
            Capped::Groups => groups::count(&mut *tx, user_id).await?,
        };
        counts.push((cap, count));
    }
    Ok(quota.exceeded(&counts))
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1").execute(&self.pool).await.map(|_| ())
    }

    async fn insert_user(&self, user_id: UserId, username: &str, password_hash: &str) -> StoreResult<bool> {
        match users::insert(&self.pool, user_id, username, password_hash).await {
            Ok(()) => Ok(true),
            Err(error) if is_unique_violation(&error, fastnpc_shared::store::users::USERNAME_KEY) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn credentials(&self, username: &str) -> StoreResult<Option<Credentials>> {
        users::credentials(&self.pool, username).await
    }

    async fn user(&self, user_id: UserId) -> StoreResult<Option<UserRecord>> {
        users::get(&self.pool, user_id).await
    }

    async fn update_user_settings(&self, user_id: UserId, patch: SettingsPatch<'_>) -> StoreResult<()> {
        users::update_settings(&self.pool, user_id, patch).await
    }

    async fn password_hash(&self, user_id: UserId) -> StoreResult<Option<String>> {
        users::password_hash(&self.pool, user_id).await
    }

    async fn change_password(&self, user_id: UserId, password_hash: &str, keep: Option<&[u8]>) -> StoreResult<()> {
        users::change_password(&self.pool, user_id, password_hash, keep).await
    }

    async fn delete_user(&self, user_id: UserId) -> StoreResult<bool> {
        users::delete(&self.pool, user_id).await
    }

    async fn insert_session(&self, token_hash: &[u8], user_id: UserId, expires_at: DateTime<Utc>) -> StoreResult<()> {
        users::insert_session(&self.pool, token_hash, user_id, expires_at).await
    }

    async fn session_user(&self, token_hash: &[u8]) -> StoreResult<Option<UserId>> {
        users::session_user(&self.pool, token_hash).await
    }

    async fn revoke_session(&self, token_hash: &[u8]) -> StoreResult<()> {
        users::revoke_session(&self.pool, token_hash).await
    }

    async fn purge_sessions(&self) -> StoreResult<u64> {
        users::purge_sessions(&self.pool).await
    }

    async fn insert_api_key(
        &self,
        key_id: uuid::Uuid,
        user_id: UserId,
        name: &str,
        prefix: &str,
        key_hash: &[u8],
    ) -> StoreResult<()> {
        api_keys::insert(&self.pool, key_id, user_id, name, prefix, key_hash).await
    }

    async fn list_api_keys(&self, user_id: UserId) -> StoreResult<Vec<ApiKeyRecord>> {
        api_keys::list(&self.pool, user_id).await
    }

    async fn revoke_api_key(&self, user_id: UserId, key_id: uuid::Uuid) -> StoreResult<bool> {
        api_keys::revoke(&self.pool, user_id, key_id).await
    }

    async fn api_key_user(&self, key_hash: &[u8]) -> StoreResult<Option<UserId>> {
        api_keys::user_of(&self.pool, key_hash).await
    }

    async fn is_admin(&self, user_id: UserId) -> StoreResult<bool> {
        users::is_admin(&self.pool, user_id).await
    }

    async fn is_enabled(&self, user_id: UserId) -> StoreResult<bool> {
        users::is_enabled(&self.pool, user_id).await
    }

    async fn make_sole_admin(&self, user_id: UserId) -> StoreResult<()> {
        users::make_sole_admin(&self.pool, user_id).await
    }

    async fn clear_admins(&self) -> StoreResult<u64> {
        users::clear_admins(&self.pool).await
    }

    async fn list_accounts(&self, after: Option<UserId>, limit: i64) -> StoreResult<Vec<AccountSummary>> {
        users::list(&self.pool, after, limit).await
    }

    async fn account(&self, user_id: UserId) -> StoreResult<Option<AccountSummary>> {
        users::summary(&self.pool, user_id).await
    }

    async fn disable_user(&self, user_id: UserId) -> StoreResult<Option<u64>> {
        users::disable(&self.pool, user_id).await
    }

    async fn enable_user(&self, user_id: UserId) -> StoreResult<bool> {
        users::enable(&self.pool, user_id).await
    }

    async fn system_stats(&self) -> StoreResult<SystemStats> {
        Ok(SystemStats {
            totals: stats::totals(&self.pool).await?,
            characters_by_status: stats::characters_by_status(&self.pool).await?,
            jobs_by_kind_and_status: stats::jobs_by_kind_and_status(&self.pool).await?,
        })
    }

    async fn submit_character(
        &self,
        character: NewCharacter<'_>,
        job: NewJob<'_>,
        quota: &Quota,
    ) -> StoreResult<Submitted> {
        let mut tx = begin_immediate(&self.pool).await?;
        characters::insert(
            &mut *tx,
            character.character_id,
            character.user_id,
            character.name,
            character.source,
            character.language,
        )
        .await?;
        if let Err(taken) = insert_submitted_job(&mut tx, job).await? {
            return Ok(taken);
        }
        let caps = [Capped::Characters, Capped::ActiveJobs];
        if let Some(cap) = over_quota(&mut tx, character.user_id, quota, &caps).await? {
            return Ok(Submitted::OverQuota(cap));
        }
        tx.commit().await?;
        Ok(Submitted::Created)
    }

    async fn character(&self, user_id: UserId, character_id: CharacterId) -> StoreResult<Option<CharacterRecord>> {
        characters::get(&self.pool, user_id, character_id).await
    }

    async fn character_by_id(&self, character_id: CharacterId) -> StoreResult<Option<CharacterRecord>> {
        characters::get_by_id(&self.pool, character_id).await
    }

    async fn list_characters(
        &self,
        user_id: UserId,
        before: Option<CharacterId>,
        limit: i64,
    ) -> StoreResult<Vec<CharacterSummary>> {
        characters::list(&self.pool, user_id, before, limit).await
    }

    async fn delete_character(&self, user_id: UserId, character_id: CharacterId) -> StoreResult<bool> {
        characters::delete(&self.pool, user_id, character_id).await
    }

    async fn finish_generation(
        &self,
        claim: &Claim,
        character_id: CharacterId,
        profile: &Value,
        brief: &str,
        prompt_version: Option<&str>,
        result: &Value,
    ) -> StoreResult<bool> {
        let mut tx = begin_immediate(&self.pool).await?;
        characters::mark_ready(&mut *tx, character_id, profile, brief, prompt_version).await?;
        if !jobs::succeed(&mut tx, claim, result).await? {
            // Rolled back on drop: the character stays as the job's new owner will leave it.
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn submit_message(
        &self,
        message: NewUserMessage<'_>,
        job: NewJob<'_>,
        quota: &Quota,
    ) -> StoreResult<Submitted> {
        let mut tx = begin_immediate(&self.pool).await?;
        messages::insert_user_message(
            &mut *tx,
            message.message_id,
            message.user_id,
            message.character_id,
            message.content,
        )
        .await?;
        if let Err(taken) = insert_submitted_job(&mut tx, job).await? {
            return Ok(taken);
        }
        if let Some(cap) = over_quota(&mut tx, message.user_id, quota, &[Capped::ActiveJobs]).await? {
            return Ok(Submitted::OverQuota(cap));
        }
        tx.commit().await?;
        Ok(Submitted::Created)
    }

    async fn message(&self, user_id: UserId, message_id: MessageId) -> StoreResult<Option<MessageRecord>> {
        messages::get(&self.pool, user_id, message_id).await
    }

    async fn reply_of_job(&self, job_id: JobId) -> StoreResult<Option<MessageRecord>> {
        messages::reply_of_job(&self.pool, job_id).await
    }

    async fn message_history(
        &self,
        user_id: UserId,
        character_id: CharacterId,
        before: Option<MessageId>,
        limit: i64,
    ) -> StoreResult<Vec<MessageRecord>> {
        messages::history(&self.pool, user_id, character_id, before, limit).await
    }

    async fn uncompressed_messages(
        &self,
        character_id: CharacterId,
        answering: Option<MessageId>,
        limit: i64,
    ) -> StoreResult<Vec<MessageRecord>> {
        messages::uncompressed(&self.pool, character_id, answering, limit).await
    }

    async fn uncompressed_chars(&self, character_id: CharacterId) -> StoreResult<i64> {
        messages::uncompressed_chars(&self.pool, character_id).await
    }

    async fn oldest_uncompressed(&self, character_id: CharacterId, limit: i64) -> StoreResult<Vec<MessageRecord>> {
        messages::oldest_uncompressed(&self.pool, character_id, limit).await
    }

    async fn memory_and_session(
        &self,
        character_id: CharacterId,
        answering: Option<MessageId>,
        limit: i64,
    ) -> StoreResult<(Memories, Vec<MessageRecord>)> {
        // A deferred transaction reads from one WAL snapshot (taken at its first read) and takes
        // no write lock.
        let mut snapshot = self.pool.begin().await?;
        let memories = memories::load(&mut *snapshot, character_id).await?;
        let session = messages::uncompressed(&mut *snapshot, character_id, answering, limit).await?;
        snapshot.commit().await?;
        Ok((memories, session))
    }

    async fn finish_reply(
        &self,
        claim: &Claim,
        reply: NewReply<'_>,
        result: ReplyResult<'_>,
    ) -> StoreResult<Option<MessageRecord>> {
        let mut tx = begin_immediate(&self.pool).await?;
        messages::insert_reply(&mut *tx, reply).await?;
        let Some(stored) = messages::reply_of_job(&mut *tx, claim.job_id).await? else { return Ok(None) };
        if !jobs::succeed(&mut tx, claim, &result(&stored)).await? {
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(stored))
    }

    async fn memories(&self, character_id: CharacterId) -> StoreResult<Memories> {
        memories::load(&self.pool, character_id).await
    }

    async fn replace_memories(
        &self,
        character_id: CharacterId,
        short_term: &[MemoryEntry],
        long_term: &[MemoryEntry],
    ) -> StoreResult<()> {
        let mut tx = begin_immediate(&self.pool).await?;
        memories::replace(&mut tx, character_id, None, short_term, long_term).await?;
        tx.commit().await
    }

    async fn commit_compression(
        &self,
        claim: &Claim,
        character_id: CharacterId,
        write: Option<MemoryWrite<'_>>,
        result: &Value,
    ) -> StoreResult<CompressionCommit> {
        let mut tx = begin_immediate(&self.pool).await?;
        if let Some(write) = write {
            if !memories::replace(
                &mut tx,
                character_id,
                Some(write.expected_version),
                write.short_term,
                write.long_term,
            )
            .await?
            {
                return Ok(CompressionCommit::MemoryChanged);
            }
            let recorded = match write.absorbed {
                Absorbed::Nothing => true,
                Absorbed::Messages(ids) => messages::mark_compressed(&mut *tx, ids).await? == ids.len() as u64,
                Absorbed::GroupCursor { group_id, from, to } => {
                    groups::advance_absorbed(&mut *tx, *group_id, character_id, *from, *to).await?
                }
            };
            if !recorded {
                return Ok(CompressionCommit::AlreadyAbsorbed);
            }
        }
        if !jobs::succeed(&mut tx, claim, result).await? {
            return Ok(CompressionCommit::LostClaim);
        }
        tx.commit().await?;
        Ok(CompressionCommit::Committed)
    }

    async fn create_group(
        &self,
        group_id: GroupId,
        user_id: UserId,
        name: &str,
        members: &[CharacterId],
        quota: &Quota,
    ) -> StoreResult<Submitted> {
        let mut tx = begin_immediate(&self.pool).await?;
        groups::insert(&mut *tx, group_id, user_id, name).await?;
        groups::add_members(&mut *tx, user_id, group_id, members).await?;
        if let Some(cap) = over_quota(&mut tx, user_id, quota, &[Capped::Groups]).await? {
            return Ok(Submitted::OverQuota(cap));
        }
        tx.commit().await?;
        Ok(Submitted::Created)
    }

    async fn group(&self, user_id: UserId, group_id: GroupId) -> StoreResult<Option<GroupRecord>> {
        groups::get(&self.pool, user_id, group_id).await
    }

    async fn list_groups(&self, user_id: UserId) -> StoreResult<Vec<GroupRecord>> {
        groups::list(&self.pool, user_id).await
    }

    async fn rename_group(&self, user_id: UserId, group_id: GroupId, name: &str) -> StoreResult<bool> {
        groups::rename(&self.pool, user_id, group_id, name).await
    }

    async fn delete_group(&self, user_id: UserId, group_id: GroupId) -> StoreResult<bool> {
        groups::delete(&self.pool, user_id, group_id).await
    }

    async fn add_group_members(
        &self,
        user_id: UserId,
        group_id: GroupId,
        character_ids: &[CharacterId],
    ) -> StoreResult<u64> {
        groups::add_members(&self.pool, user_id, group_id, character_ids).await
    }

    async fn count_owned_characters(&self, user_id: UserId, character_ids: &[CharacterId]) -> StoreResult<i64> {
        groups::count_owned_characters(&self.pool, user_id, character_ids).await
    }

    async fn remove_group_member(
        &self,
        user_id: UserId,
        group_id: GroupId,
        character_id: CharacterId,
    ) -> StoreResult<bool> {
        groups::remove_member(&self.pool, user_id, group_id, character_id).await
    }

    async fn group_members(&self, group_id: GroupId) -> StoreResult<Vec<Member>> {
        groups::members(&self.pool, group_id).await
    }

    async fn submit_group_message(
        &self,
        message: NewGroupMessage<'_>,
        job: NewJob<'_>,
        quota: &Quota,
    ) -> StoreResult<Submitted> {
        let user_id = job.user_id;
        let mut tx = begin_immediate(&self.pool).await?;
        groups::insert_message(&mut *tx, message).await?;
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
        let mut tx = begin_immediate(&self.pool).await?;
        groups::insert_message(&mut *tx, message).await?;
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
        groups::history(&self.pool, group_id, before, limit).await
    }

    async fn group_messages_after(
        &self,
        group_id: GroupId,
        after: Option<MessageId>,
        limit: i64,
    ) -> StoreResult<Vec<GroupMessageRecord>> {
        groups::after(&self.pool, group_id, after, limit).await
    }

    async fn group_pending_size(&self, group_id: GroupId, after: Option<MessageId>) -> StoreResult<(i64, i64)> {
        groups::pending_size(&self.pool, group_id, after).await
    }

    async fn group_rounds_done(&self, job_id: JobId) -> StoreResult<i32> {
        groups::rounds_done(&self.pool, job_id).await
    }

    async fn group_message_of_turn(&self, group_id: GroupId, job_id: JobId) -> StoreResult<Option<GroupMessageRecord>> {
        groups::message_of_turn(&self.pool, group_id, job_id).await
    }

    async fn insert_job(&self, job: NewJob<'_>) -> StoreResult<()> {
        jobs::insert(&self.pool, job).await
    }

    async fn job(&self, user_id: UserId, job_id: JobId) -> StoreResult<Option<JobRecord>> {
        jobs::get(&self.pool, user_id, job_id).await
    }

    async fn job_by_idempotency_key(&self, user_id: UserId, key: &str) -> StoreResult<Option<(JobId, Vec<u8>)>> {
        jobs::find_by_idempotency_key(&self.pool, user_id, key).await
    }

    async fn submit_retry(&self, job: NewJob<'_>, guard: RetryGuard, quota: &Quota) -> StoreResult<Submitted> {
        let user_id = job.user_id;
        let mut tx = begin_immediate(&self.pool).await?;
        let holds = match guard {
            RetryGuard::MessageUnanswered(message_id) => {
                // Locked so two concurrent retries cannot both pass the check.
                jobs::lock_message(&mut *tx, message_id).await?;
                !jobs::message_answered_or_pending(&mut *tx, message_id).await?
            }
            RetryGuard::CharacterFailed { user_id, character_id } => {
                characters::mark_generating(&mut *tx, user_id, character_id).await?
            }
            RetryGuard::None => true,
        };
        if !holds {
            return Ok(Submitted::NotRetryable);
        }
        jobs::insert(&mut *tx, job).await?;
        if let Some(cap) = over_quota(&mut tx, user_id, quota, &[Capped::ActiveJobs]).await? {
            return Ok(Submitted::OverQuota(cap));
        }
        tx.commit().await?;
        Ok(Submitted::Created)
    }

    async fn active_jobs_of(&self, user_id: UserId) -> StoreResult<Vec<JobId>> {
        jobs::active_of(&self.pool, user_id).await
    }

    async fn cancel_job(&self, job_id: JobId, generating: Option<CharacterId>) -> StoreResult<CancelOutcome> {
        let mut tx = begin_immediate(&self.pool).await?;
        let outcome = jobs::request_cancel(&mut tx, job_id).await?;
        if outcome == CancelOutcome::Cancelled
            && let Some(character_id) = generating
        {
            characters::mark_failed(&mut *tx, character_id).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn reopen_job(&self, job_id: JobId) -> StoreResult<bool> {
        jobs::reopen(&self.pool, job_id).await
    }

    async fn mark_published(&self, job_id: JobId) -> StoreResult<()> {
        jobs::mark_published(&self.pool, job_id).await
    }

    async fn mark_unpublished(&self, job_id: JobId) -> StoreResult<()> {
        jobs::mark_unpublished(&self.pool, job_id).await
    }

    async fn unpublished_jobs(&self, grace: Duration, stale: Duration, limit: i64) -> StoreResult<Vec<JobId>> {
        jobs::unpublished(&self.pool, grace, stale, limit).await
    }

    async fn next_in_series(&self, serial_key: &str) -> StoreResult<Option<JobId>> {
        jobs::next_in_series(&self.pool, serial_key).await
    }

    async fn successor_waiting(&self, serial_key: &str, job_id: JobId) -> StoreResult<bool> {
        jobs::successor_waiting(&self.pool, serial_key, job_id).await
    }

    async fn compression_queued(&self, character_id: CharacterId, group_id: Option<GroupId>) -> StoreResult<bool> {
        jobs::compression_queued(&self.pool, character_id, group_id).await
    }

    async fn reset_deliveries(&self) -> StoreResult<u64> {
        jobs::reset_deliveries(&self.pool).await
    }

    async fn daily_usage(&self, user_id: UserId, days: u32) -> StoreResult<Vec<DailyUsage>> {
        usage::daily(&self.pool, user_id, days).await
    }

    async fn tokens_today(&self, user_id: UserId) -> StoreResult<u64> {
        usage::tokens_today(&self.pool, user_id).await
    }

    async fn claim_job(&self, job_id: JobId, lease: Duration) -> StoreResult<Option<Claim>> {
        jobs::claim(&self.pool, job_id, lease).await
    }

    async fn job_status(&self, job_id: JobId) -> StoreResult<Option<JobStatus>> {
        jobs::status(&self.pool, job_id).await
    }

    async fn renew_lease(&self, claim: &Claim, lease: Duration) -> StoreResult<Heartbeat> {
        jobs::renew_lease(&self.pool, claim, lease).await
    }

    async fn set_progress(&self, claim: &Claim, done: i32) -> StoreResult<bool> {
        jobs::set_progress(&self.pool, claim, done).await
    }

    async fn succeed_job(&self, claim: &Claim, result: &Value) -> StoreResult<bool> {
        // The job's update and the day's usage, together (see `jobs::succeed`).
        let mut tx = begin_immediate(&self.pool).await?;
        if !jobs::succeed(&mut tx, claim, result).await? {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn fail_job(&self, claim: &Claim, error: &JobError) -> StoreResult<bool> {
        let mut tx = begin_immediate(&self.pool).await?;
        if !jobs::fail(&mut tx, claim, error).await? {
            return Ok(false);
        }
        // A failed chat reply keeps the user's message (the client may retry); a failed
        // generation leaves no half-made character behind.
        if claim.kind == JobKind::GenerateCharacter
            && let Some(character_id) = claim.character_id
        {
            characters::mark_failed(&mut *tx, character_id).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn cancel_claimed_job(&self, claim: &Claim, result: &Value) -> StoreResult<bool> {
        let mut tx = begin_immediate(&self.pool).await?;
        if !jobs::cancel(&mut tx, claim, result).await? {
            return Ok(false);
        }
        if claim.kind == JobKind::GenerateCharacter
            && let Some(character_id) = claim.character_id
        {
            characters::mark_failed(&mut *tx, character_id).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn release_job(&self, claim: &Claim) -> StoreResult<bool> {
        // The job's update and the day's usage, together (see `jobs::succeed`).
        let mut tx = begin_immediate(&self.pool).await?;
        if !jobs::release(&mut tx, claim).await? {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn fail_unclaimed_job(&self, job_id: JobId, error: &JobError) -> StoreResult<bool> {
        jobs::fail_unclaimed(&self.pool, job_id, error).await
    }

    async fn export_user(&self, username: &str) -> StoreResult<Result<UserExport, ExportRefusal>> {
        // A deferred transaction reads from one WAL snapshot.
        let mut snapshot = self.pool.begin().await?;
        let Some(user) = export::user(&mut *snapshot, username).await? else {
            return Ok(Err(ExportRefusal::NoSuchUser));
        };
        let active = jobs::active_count(&mut *snapshot, user.user_id).await?;
        if active > 0 {
            return Ok(Err(ExportRefusal::JobsActive(active)));
        }
        let document = export::owned(&mut snapshot, user).await?;
        snapshot.commit().await?;
        Ok(Ok(document))
    }

    async fn import_user(&self, document: &UserExport) -> StoreResult<Imported> {
        let mut tx = begin_immediate(&self.pool).await?;
        // On an error the transaction is dropped: rolled back, nothing written.
        match export::insert_all(&mut tx, document).await {
            Ok(()) => {}
            Err(error) if is_unique_violation(&error, fastnpc_shared::store::users::USERNAME_KEY) => {
                return Ok(Imported::UsernameTaken);
            }
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => return Ok(Imported::IdsTaken),
            Err(error) => return Err(error),
        }
        tx.commit().await?;
        Ok(Imported::Done)
    }
}
