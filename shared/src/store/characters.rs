//! Characters. Every read and delete is scoped by owner: a character of another user is
//! indistinguishable from one that does not exist.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

use super::Capped;
use super::NewCharacter;
use super::PgStore;
use super::QueuedCharacter;
use super::Quota;
use super::StoreResult;
use super::Submitted;
use super::jobs;
use super::jobs::Claim;
use super::jobs::NewJob;
use super::postgres::{JobColumns, column, write_round};
use crate::ids::{CharacterId, UserId};

/// A character with its profile.
#[derive(Clone, Debug)]
pub struct CharacterRecord {
    pub character_id: CharacterId,
    pub user_id: UserId,
    pub name: String,
    pub status: String,
    pub source: Value,
    pub profile: Option<Value>,
    pub brief: Option<String>,
    /// `zh` or `en`: the language of the profile and of the character's replies.
    pub language: String,
    /// The prompt set that wrote the profile; none until it is generated.
    pub prompt_version: Option<String>,
    /// The fetched document it was built from (`crate::sources::Snapshot`); none for pasted
    /// text and until the job fetched it.
    pub source_snapshot: Option<Value>,
    /// The number of the current version of name, brief and profile (0 before the first
    /// profile); each generation, edit and restore adds one (see [`CharacterVersion`]).
    pub version: i64,
    /// The `ETag` of its avatar, if it has one (not read for a chat prompt, which shows none).
    pub avatar_etag: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl CharacterRecord {
    /// The prompt set of the character's language (Chinese for a value this build does not know).
    pub fn prompts(&self) -> &'static dyn crate::prompts::PromptSet {
        self.language.parse::<crate::prompts::Language>().unwrap_or_default().prompts()
    }
}

/// A character in a listing (no profile or source: listings stay small).
#[derive(Clone, Debug)]
pub struct CharacterSummary {
    pub character_id: CharacterId,
    pub name: String,
    pub status: String,
    pub brief: Option<String>,
    /// The `ETag` of its avatar, if it has one.
    pub avatar_etag: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) async fn get(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    character_id: CharacterId,
) -> Result<Option<CharacterRecord>, sqlx::Error> {
    sqlx::query_as!(
        CharacterRecord,
        r#"select character_id as "character_id: CharacterId", user_id as "user_id: UserId", name, status,
                  source, profile, brief, language, prompt_version, source_snapshot, version,
                  (select a.etag from character_avatars a where a.character_id = characters.character_id)
                      as "avatar_etag?",
                  created_at, updated_at
           from characters where character_id = $1 and user_id = $2"#,
        character_id.0,
        user_id.0,
    )
    .fetch_optional(db)
    .await
}

/// The workers' reads, one answer per id in order: the job already proved ownership, so no owner
/// filter. One statement serves a round of claimed jobs (see [`super::batch::Keyed::ask`]).
pub(crate) async fn get_by_ids(
    db: impl PgExecutor<'_>,
    character_ids: &[CharacterId],
) -> Result<Vec<Option<CharacterRecord>>, sqlx::Error> {
    let ids: Vec<uuid::Uuid> = character_ids.iter().map(|id| id.0).collect();
    let rows = sqlx::query_as!(
        CharacterRecord,
        r#"select character_id as "character_id: CharacterId", user_id as "user_id: UserId", name, status,
                  source, profile, brief, language, prompt_version, source_snapshot, version,
                  (select a.etag from character_avatars a where a.character_id = characters.character_id)
                      as "avatar_etag?",
                  created_at, updated_at
           from characters where character_id = any($1)"#,
        &ids,
    )
    .fetch_all(db)
    .await?;
    let found: std::collections::HashMap<CharacterId, CharacterRecord> =
        rows.into_iter().map(|character| (character.character_id, character)).collect();
    // An id asked twice in one round gets the row both times.
    Ok(character_ids.iter().map(|id| found.get(id).cloned()).collect())
}

/// The user's characters, newest first; `before` is the last id of the previous page.
pub(crate) async fn list(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    before: Option<CharacterId>,
    limit: i64,
) -> Result<Vec<CharacterSummary>, sqlx::Error> {
    // UUIDv7 ids are creation-ordered, so the id alone is a stable cursor.
    sqlx::query_as!(
        CharacterSummary,
        r#"select character_id as "character_id: CharacterId", name, status, brief,
                  (select a.etag from character_avatars a where a.character_id = characters.character_id)
                      as "avatar_etag?",
                  created_at, updated_at
           from characters
           where user_id = $1 and ($2::uuid is null or character_id < $2)
           order by character_id desc
           limit $3"#,
        user_id.0,
        before.map(|id| id.0),
        limit,
    )
    .fetch_all(db)
    .await
}

/// Deletes a character (its jobs go with it). False when the user has no such character.
pub(crate) async fn delete(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    character_id: CharacterId,
) -> Result<bool, sqlx::Error> {
    let result =
        sqlx::query!("delete from characters where character_id = $1 and user_id = $2", character_id.0, user_id.0,)
            .execute(db)
            .await?;
    Ok(result.rows_affected() == 1)
}

/// Stores a generated profile, with the prompt set that wrote it, as the character's next
/// version, and marks the character ready.
pub(crate) async fn mark_ready(
    db: impl PgExecutor<'_>,
    character_id: CharacterId,
    profile: &Value,
    brief: &str,
    prompt_version: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        "with ready as (
             update characters set status = 'ready', profile = $2, brief = $3, prompt_version = $4,
                                   version = version + 1, updated_at = now()
             where character_id = $1
             returning character_id, version, name, brief, profile, updated_at
         )
         insert into character_versions (character_id, version, change, name, brief, profile, created_at)
         select character_id, version, 'generated', name, brief, profile, updated_at from ready",
        character_id.0,
        profile,
        brief,
        prompt_version,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Marks a character whose generation failed for good.
pub(crate) async fn mark_failed(db: impl PgExecutor<'_>, character_id: CharacterId) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update characters set status = 'failed', updated_at = now() where character_id = $1 and status = 'generating'",
        character_id.0,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Puts a failed character back to `generating` for a retried generation. False when it is not
/// failed (or not the user's).
pub(crate) async fn mark_generating(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    character_id: CharacterId,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        "update characters set status = 'generating', updated_at = now()
         where character_id = $1 and user_id = $2 and status = 'failed'",
        character_id.0,
        user_id.0,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// True when the user's character is `ready`; it is then locked against deletion (and a retried
/// generation) until the transaction ends, so a job written after this check finds it.
pub(crate) async fn hold_ready(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    character_id: CharacterId,
) -> Result<bool, sqlx::Error> {
    let held = sqlx::query_scalar!(
        "select true from characters where character_id = $1 and user_id = $2 and status = 'ready' for share",
        character_id.0,
        user_id.0,
    )
    .fetch_optional(db)
    .await?;
    Ok(held.is_some())
}

/// One version of a character's name, brief and profile, as a listing shows it.
#[derive(Clone, Debug)]
pub struct CharacterVersionSummary {
    pub version: i64,
    /// `generated`, `edited`, `restored` or `imported`.
    pub change: String,
    /// What the change touched (`{"fields": [...]}` for an edit, `{"from_version": n}` for a
    /// restore).
    pub detail: Value,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// One version of a character's name, brief and profile, whole.
#[derive(Clone, Debug)]
pub struct CharacterVersion {
    pub version: i64,
    pub change: String,
    pub detail: Value,
    pub name: String,
    pub brief: Option<String>,
    pub profile: Value,
    pub created_at: DateTime<Utc>,
}

/// A new current version of a character, written by its owner.
pub struct CharacterEdit<'a> {
    pub name: &'a str,
    pub brief: Option<&'a str>,
    pub profile: &'a Value,
    /// `edited` or `restored`.
    pub change: &'static str,
    pub detail: &'a Value,
}

/// How an edit ended.
#[derive(Debug)]
pub enum Edited {
    /// Written as the next version: the character as it is now.
    Saved(Box<CharacterRecord>),
    NotFound,
    /// Generating or failed: there is no profile to edit (the status).
    NotReady(String),
    /// Another change came first: the current version.
    Stale(i64),
}

/// A character made from a Character Card: ready at once, as its version 1 (`imported`).
pub struct ImportedCharacter<'a> {
    pub character: NewCharacter<'a>,
    pub profile: &'a Value,
    pub brief: Option<&'a str>,
    /// The card's `data`, kept so an export gives back what the profile does not hold.
    pub card: &'a Value,
    /// What the version history says of the import (`{"card": "v2"}`).
    pub detail: &'a Value,
    /// The picture a PNG card was (re-encoded).
    pub avatar: Option<&'a super::avatars::Avatar>,
}

/// How copying a character ended.
#[derive(Debug)]
pub enum Copied {
    /// The new character (ready, version 1).
    Created(Box<CharacterRecord>),
    NotFound,
    /// Generating or failed: there is no profile to copy (the status).
    NotReady(String),
    /// Nothing was written: the user is at this cap.
    OverQuota(Capped),
}

impl Edited {
    /// Why an edit of a character in `current` state (its status and version, none when it is
    /// not the user's) is refused, if it is: the rule both stores apply under their lock.
    pub fn refusal(current: Option<(String, i64)>, expected_version: i64) -> Option<Self> {
        match current {
            None => Some(Self::NotFound),
            Some((status, _)) if status != "ready" => Some(Self::NotReady(status)),
            Some((_, version)) if version != expected_version => Some(Self::Stale(version)),
            Some(_) => None,
        }
    }
}

/// Builds a regeneration's job result from the version it wrote, inside the transaction that
/// writes both.
pub type RegenerationResult<'a> = &'a (dyn Fn(i64) -> Value + Send + Sync);

/// Characters: created with the job that generates them, filled in by it, edited by their owner.
#[async_trait::async_trait]
pub trait CharacterStore: Send + Sync {
    /// A character and the job that generates it, together.
    async fn submit_character(
        &self,
        character: NewCharacter<'_>,
        job: NewJob<'_>,
        quota: &Quota,
    ) -> StoreResult<Submitted>;
    async fn character(&self, user_id: UserId, character_id: CharacterId) -> StoreResult<Option<CharacterRecord>>;
    /// The character's latest generation job (a retry is a new attempt of the same job), so a
    /// client that did not start it can follow it.
    async fn generation_job(
        &self,
        character_id: CharacterId,
    ) -> StoreResult<Option<(crate::ids::JobId, crate::jobs::JobStatus)>>;
    /// Without owner check (worker side).
    async fn character_by_id(&self, character_id: CharacterId) -> StoreResult<Option<CharacterRecord>>;
    async fn list_characters(
        &self,
        user_id: UserId,
        before: Option<CharacterId>,
        limit: i64,
    ) -> StoreResult<Vec<CharacterSummary>>;
    async fn delete_character(&self, user_id: UserId, character_id: CharacterId) -> StoreResult<bool>;
    /// Stores the generated profile (with the prompt set that wrote it) and ends the job as
    /// succeeded, together; false when the claim was lost (nothing written).
    async fn finish_generation(
        &self,
        claim: &Claim,
        character_id: CharacterId,
        profile: &Value,
        brief: &str,
        prompt_version: Option<&str>,
        result: &Value,
    ) -> StoreResult<bool>;
    /// Stores a regeneration's categories (replacing those of the current profile, whatever
    /// edits they held; the others are kept) and its brief, if it wrote one, as the character's
    /// next version (`regenerated`, with `detail`), and ends the job as succeeded with
    /// `result(version)`, together. `None` when the claim was lost or the character is no longer
    /// ready (nothing written).
    async fn finish_regeneration(
        &self,
        claim: &Claim,
        character_id: CharacterId,
        regenerated: &serde_json::Map<String, Value>,
        brief: Option<&str>,
        detail: &Value,
        result: RegenerationResult<'_>,
    ) -> StoreResult<Option<i64>>;
    /// Writes `edit` as the next version of a ready character still at `expected_version`
    /// (optimistic concurrency: the caller read that version and built the edit from it).
    async fn edit_character(
        &self,
        user_id: UserId,
        character_id: CharacterId,
        expected_version: i64,
        edit: CharacterEdit<'_>,
    ) -> StoreResult<Edited>;
    /// The character's versions, newest first; `before` is the last version of the previous
    /// page. Empty for a character that is not the user's.
    async fn character_versions(
        &self,
        user_id: UserId,
        character_id: CharacterId,
        before: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<CharacterVersionSummary>>;
    async fn character_version(
        &self,
        user_id: UserId,
        character_id: CharacterId,
        version: i64,
    ) -> StoreResult<Option<CharacterVersion>>;
    /// Creates a character from a card (see [`ImportedCharacter`]): `Created` or `OverQuota`.
    async fn import_character(&self, imported: ImportedCharacter<'_>, quota: &Quota) -> StoreResult<Submitted>;
    /// The card the character was imported from (`data`) and its version at the import.
    async fn character_card(&self, user_id: UserId, character_id: CharacterId) -> StoreResult<Option<(Value, i64)>>;
    /// A new ready character `copy` with `original`'s current profile, brief, source and picture
    /// (and `name`, or the original's), as its version 1; no conversation, memory or history.
    async fn copy_character(
        &self,
        user_id: UserId,
        original: CharacterId,
        copy: CharacterId,
        name: Option<&str>,
        quota: &Quota,
    ) -> StoreResult<Copied>;
}

#[async_trait::async_trait]
impl CharacterStore for PgStore {
    async fn submit_character(
        &self,
        character: NewCharacter<'_>,
        job: NewJob<'_>,
        quota: &Quota,
    ) -> StoreResult<Submitted> {
        // Group commit per user, as for messages (see `submit_message`).
        let (store, quota) = (self.clone(), *quota);
        let queued = QueuedCharacter::new(&character, &job);
        self.character_rounds
            .submit(character.user_id, queued, move |user_id, round| {
                let store = store.clone();
                async move { write_round(&round, |round| store.insert_characters(user_id, round, &quota)).await }
            })
            .await
    }

    async fn character(&self, user_id: UserId, character_id: CharacterId) -> StoreResult<Option<CharacterRecord>> {
        get(&self.pool, user_id, character_id).await
    }

    async fn generation_job(
        &self,
        character_id: CharacterId,
    ) -> StoreResult<Option<(crate::ids::JobId, crate::jobs::JobStatus)>> {
        let row = sqlx::query!(
            r#"select job_id as "job_id: crate::ids::JobId", status as "status: crate::jobs::JobStatus" from jobs
               where character_id = $1 and kind = 'generate_character' order by job_id desc limit 1"#,
            character_id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| (row.job_id, row.status)))
    }

    async fn character_by_id(&self, character_id: CharacterId) -> StoreResult<Option<CharacterRecord>> {
        self.ask(
            &self.character_reads,
            (),
            character_id,
            |pool, (), wanted| async move { get_by_ids(&pool, &wanted).await },
        )
        .await
    }

    async fn list_characters(
        &self,
        user_id: UserId,
        before: Option<CharacterId>,
        limit: i64,
    ) -> StoreResult<Vec<CharacterSummary>> {
        list(&self.pool, user_id, before, limit).await
    }

    async fn delete_character(&self, user_id: UserId, character_id: CharacterId) -> StoreResult<bool> {
        delete(&self.pool, user_id, character_id).await
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
        let mut tx = self.pool.begin().await?;
        mark_ready(&mut *tx, character_id, profile, brief, prompt_version).await?;
        if !jobs::succeed(&mut *tx, claim, result).await? {
            // Rolled back on drop: the character stays as the job's new owner will leave it.
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn finish_regeneration(
        &self,
        claim: &Claim,
        character_id: CharacterId,
        regenerated: &serde_json::Map<String, Value>,
        brief: Option<&str>,
        detail: &Value,
        result: RegenerationResult<'_>,
    ) -> StoreResult<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        // `||` replaces whole top-level keys: a regenerated category keeps none of its old fields.
        let version = sqlx::query_scalar!(
            "with saved as (
                 update characters set profile = profile || $2, brief = coalesce($3, brief),
                                       version = version + 1, updated_at = now()
                 where character_id = $1 and status = 'ready'
                 returning character_id, version, name, brief, profile, updated_at
             ),
             recorded as (
                 insert into character_versions (character_id, version, change, detail, name, brief, profile,
                                                 created_at)
                 select character_id, version, 'regenerated', $4, name, brief, profile, updated_at from saved
             )
             select version from saved",
            character_id.0,
            Value::Object(regenerated.clone()),
            brief,
            detail,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(version) = version else { return Ok(None) };
        if !jobs::succeed(&mut *tx, claim, &result(version)).await? {
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(version))
    }

    async fn edit_character(
        &self,
        user_id: UserId,
        character_id: CharacterId,
        expected_version: i64,
        edit: CharacterEdit<'_>,
    ) -> StoreResult<Edited> {
        let mut tx = self.pool.begin().await?;
        let current = sqlx::query!(
            "select status, version from characters where character_id = $1 and user_id = $2 for update",
            character_id.0,
            user_id.0,
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(refused) = Edited::refusal(current.map(|row| (row.status, row.version)), expected_version) {
            return Ok(refused);
        }
        sqlx::query!(
            "with saved as (
                 update characters set name = $2, brief = $3, profile = $4, version = version + 1, updated_at = now()
                 where character_id = $1
                 returning character_id, version, name, brief, profile, updated_at
             )
             insert into character_versions (character_id, version, change, detail, name, brief, profile, created_at)
             select character_id, version, $5, $6, name, brief, profile, updated_at from saved",
            character_id.0,
            edit.name,
            edit.brief,
            edit.profile,
            edit.change,
            edit.detail,
        )
        .execute(&mut *tx)
        .await?;
        let saved = get(&mut *tx, user_id, character_id).await?.ok_or_else(|| sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        Ok(Edited::Saved(Box::new(saved)))
    }

    async fn character_versions(
        &self,
        user_id: UserId,
        character_id: CharacterId,
        before: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<CharacterVersionSummary>> {
        sqlx::query_as!(
            CharacterVersionSummary,
            r#"select v.version, v.change, v.detail, v.name, v.created_at
               from character_versions v join characters c using (character_id)
               where v.character_id = $1 and c.user_id = $2 and ($3::bigint is null or v.version < $3)
               order by v.version desc
               limit $4"#,
            character_id.0,
            user_id.0,
            before,
            limit,
        )
        .fetch_all(&self.pool)
        .await
    }

    async fn character_version(
        &self,
        user_id: UserId,
        character_id: CharacterId,
        version: i64,
    ) -> StoreResult<Option<CharacterVersion>> {
        sqlx::query_as!(
            CharacterVersion,
            r#"select v.version, v.change, v.detail, v.name, v.brief, v.profile, v.created_at
               from character_versions v join characters c using (character_id)
               where v.character_id = $1 and c.user_id = $2 and v.version = $3"#,
            character_id.0,
            user_id.0,
            version,
        )
        .fetch_optional(&self.pool)
        .await
    }

    async fn import_character(&self, imported: ImportedCharacter<'_>, quota: &Quota) -> StoreResult<Submitted> {
        let ImportedCharacter { character, profile, brief, card, detail, avatar } = imported;
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "insert into characters (character_id, user_id, name, status, source, profile, brief, language, version,
                                     created_at, updated_at)
             values ($1, $2, $3, 'ready', $4, $5, $6, $7, 1, $8, $8)",
            character.character_id.0,
            character.user_id.0,
            character.name,
            character.source,
            profile,
            brief,
            character.language,
            character.created_at,
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "insert into character_versions (character_id, version, change, detail, name, brief, profile)
             values ($1, 1, 'imported', $2, $3, $4, $5)",
            character.character_id.0,
            detail,
            character.name,
            brief,
            profile,
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "insert into character_cards (character_id, data, imported_version) values ($1, $2, 1)",
            character.character_id.0,
            card,
        )
        .execute(&mut *tx)
        .await?;
        if let Some(avatar) = avatar {
            super::avatars::put_for_character(&mut *tx, character.user_id, character.character_id, avatar).await?;
        }
        if let Some(cap) = Self::over_quota(&mut tx, character.user_id, quota, &[Capped::Characters]).await? {
            return Ok(Submitted::OverQuota(cap));
        }
        tx.commit().await?;
        Ok(Submitted::Created)
    }

    async fn character_card(&self, user_id: UserId, character_id: CharacterId) -> StoreResult<Option<(Value, i64)>> {
        let row = sqlx::query!(
            "select k.data, k.imported_version from character_cards k join characters c using (character_id)
             where k.character_id = $1 and c.user_id = $2",
            character_id.0,
            user_id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| (row.data, row.imported_version)))
    }

    async fn copy_character(
        &self,
        user_id: UserId,
        original: CharacterId,
        copy: CharacterId,
        name: Option<&str>,
        quota: &Quota,
    ) -> StoreResult<Copied> {
        let mut tx = self.pool.begin().await?;
        let copied = sqlx::query!(
            r#"with copied as (
                   insert into characters (character_id, user_id, name, status, source, profile, brief, language,
                                           prompt_version, source_snapshot, version)
                   select $3, user_id, coalesce($4, name), 'ready', source, profile, brief, language,
                          prompt_version, source_snapshot, 1
                   from characters where character_id = $1 and user_id = $2 and status = 'ready'
                   returning character_id, name, brief, profile, created_at
               )
               insert into character_versions (character_id, version, change, detail, name, brief, profile, created_at)
               select c.character_id, 1, 'copied',
                      jsonb_build_object('from_character', $1::uuid, 'from_version', o.version),
                      c.name, c.brief, c.profile, c.created_at
               from copied c, characters o where o.character_id = $1"#,
            original.0,
            user_id.0,
            copy.0,
            name,
        )
        .execute(&mut *tx)
        .await?;
        if copied.rows_affected() == 0 {
            return Ok(match get(&mut *tx, user_id, original).await? {
                None => Copied::NotFound,
                Some(original) => Copied::NotReady(original.status),
            });
        }
        sqlx::query!(
            "insert into character_avatars (character_id, image, etag, width, height, updated_at)
             select $2, image, etag, width, height, updated_at from character_avatars where character_id = $1",
            original.0,
            copy.0,
        )
        .execute(&mut *tx)
        .await?;
        if let Some(cap) = Self::over_quota(&mut tx, user_id, quota, &[Capped::Characters]).await? {
            return Ok(Copied::OverQuota(cap));
        }
        let created = get(&mut *tx, user_id, copy).await?.ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        Ok(Copied::Created(Box::new(created)))
    }
}

impl PgStore {
    /// Writes `round` (all `user_id`'s) in one statement, as if submitted one after another in
    /// that order: each new character and its generation job are stored while the user's
    /// characters and active jobs, those admitted before it in the round included, stay within
    /// their caps. The quota lock is held for that statement and its commit only.
    async fn insert_characters(
        &self,
        user_id: UserId,
        round: &[QueuedCharacter],
        quota: &Quota,
    ) -> StoreResult<Vec<Submitted>> {
        assert!(round.iter().all(|queued| queued.user_id == user_id), "a round is one user's");
        let jobs = JobColumns::of(round, |queued| &queued.job);
        let outcomes = sqlx::query!(
            r#"with usage as materialized (select characters, active_jobs from quota_usage($1)),
                    submitted as materialized (
                        select * from unnest($2::uuid[], $3::text[], $4::jsonb[], $5::text[], $6::uuid[], $7::text[],
                                             $8::text[], $9::int[], $10::text[], $11::bytea[], $14::timestamptz[])
                            with ordinality as submitted (character_id, name, source, language, job_id, kind,
                                                          serial_key, progress_total, idempotency_key,
                                                          request_fingerprint, created_at, position)
                    ),
                    admitted as materialized (
                        select submitted.* from submitted, usage
                        where usage.characters + submitted.position <= $12
                          and usage.active_jobs + submitted.position <= $13
                    ),
                    character as (
                        insert into characters (character_id, user_id, name, source, language, created_at, updated_at)
                        select character_id, $1, name, source, language, created_at, created_at from admitted
                    ),
                    job as (
                        insert into jobs (job_id, user_id, kind, character_id, serial_key, progress_total,
                                          idempotency_key, request_fingerprint)
                        select job_id, $1, kind, character_id, serial_key, progress_total, idempotency_key,
                               request_fingerprint
                        from admitted
                    )
               select usage.characters + submitted.position - 1 as "characters_before!",
                      usage.active_jobs + submitted.position - 1 as "active_jobs_before!"
               from submitted, usage order by submitted.position"#,
            user_id.0,
            &column(round, |queued| queued.character_id.0),
            &column(round, |queued| queued.name.as_str()) as &[&str],
            &column(round, |queued| &queued.source) as &[&Value],
            &column(round, |queued| queued.language.as_str()) as &[&str],
            &jobs.job_id,
            &jobs.kind as &[&str],
            &jobs.serial_key as &[Option<&str>],
            &column(round, |queued| queued.job.progress_total),
            &jobs.idempotency_key as &[Option<&str>],
            &jobs.request_fingerprint as &[Option<&[u8]>],
            quota.limit(Capped::Characters),
            quota.limit(Capped::ActiveJobs),
            &column(round, |queued| queued.created_at),
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| {
            let held = vec![(Capped::Characters, row.characters_before), (Capped::ActiveJobs, row.active_jobs_before)];
            Self::submitted(held, quota)
        })
        .collect::<Vec<_>>();
        Ok(outcomes)
    }
}
