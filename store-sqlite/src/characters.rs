//! Characters (mirrors `fastnpc_shared::store::characters`). Every read and delete is scoped by
//! owner: a character of another user is indistinguishable from one that does not exist.
//!
//! JSON documents (`source`, `profile`) are text here; sqlx encodes and decodes
//! `serde_json::Value` as JSON text for SQLite, and the schema checks `json_valid`.

use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::{CharacterId, UserId},
    store::characters::{
        CharacterEdit, CharacterRecord, CharacterSummary, CharacterVersion, CharacterVersionSummary, Copied, Edited,
        ImportedCharacter, RegenerationResult,
    },
};
use serde_json::Value;
use sqlx::{SqliteConnection, SqliteExecutor};

use crate::SqliteStore;
use crate::begin_immediate;
use crate::jobs;
use crate::now;
use crate::store::insert_submitted_job;
use crate::store::over_quota;
use fastnpc_shared::store::Capped;
use fastnpc_shared::store::NewCharacter;
use fastnpc_shared::store::Quota;
use fastnpc_shared::store::StoreResult;
use fastnpc_shared::store::Submitted;
use fastnpc_shared::store::characters::CharacterStore;
use fastnpc_shared::store::jobs::Claim;
use fastnpc_shared::store::jobs::NewJob;

pub async fn insert(db: impl SqliteExecutor<'_>, character: &NewCharacter<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into characters (character_id, user_id, name, source, language, created_at, updated_at)
         values (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        character.character_id.0,
        character.user_id.0,
        character.name,
        character.source,
        character.language,
        character.created_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn get(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    character_id: CharacterId,
) -> Result<Option<CharacterRecord>, sqlx::Error> {
    sqlx::query_as!(
        CharacterRecord,
        r#"select character_id as "character_id!: CharacterId", user_id as "user_id: UserId", name, status,
                  source as "source: Value", profile as "profile: Value", brief, language, prompt_version,
                  source_snapshot as "source_snapshot: Value", version,
                  (select a.etag from character_avatars a where a.character_id = characters.character_id)
                      as "avatar_etag?: String",
                  created_at as "created_at: DateTime<Utc>", updated_at as "updated_at: DateTime<Utc>"
           from characters where character_id = ?1 and user_id = ?2"#,
        character_id.0,
        user_id.0,
    )
    .fetch_optional(db)
    .await
}

/// The worker's read: the job already proved ownership, so no owner filter.
pub async fn get_by_id(
    db: impl SqliteExecutor<'_>,
    character_id: CharacterId,
) -> Result<Option<CharacterRecord>, sqlx::Error> {
    sqlx::query_as!(
        CharacterRecord,
        r#"select character_id as "character_id!: CharacterId", user_id as "user_id: UserId", name, status,
                  source as "source: Value", profile as "profile: Value", brief, language, prompt_version,
                  source_snapshot as "source_snapshot: Value", version,
                  (select a.etag from character_avatars a where a.character_id = characters.character_id)
                      as "avatar_etag?: String",
                  created_at as "created_at: DateTime<Utc>", updated_at as "updated_at: DateTime<Utc>"
           from characters where character_id = ?1"#,
        character_id.0,
    )
    .fetch_optional(db)
    .await
}

/// The user's characters, newest first; `before` is the last id of the previous page.
pub async fn list(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    before: Option<CharacterId>,
    limit: i64,
) -> Result<Vec<CharacterSummary>, sqlx::Error> {
    // UUIDv7 ids are creation-ordered and stored big-endian, so blob order is id order and the
    // id alone is a stable cursor.
    let before = before.map(|id| id.0);
    sqlx::query_as!(
        CharacterSummary,
        r#"select character_id as "character_id!: CharacterId", name, status, brief,
                  (select a.etag from character_avatars a where a.character_id = characters.character_id)
                      as "avatar_etag?: String",
                  created_at as "created_at: DateTime<Utc>", updated_at as "updated_at: DateTime<Utc>"
           from characters
           where user_id = ?1 and (?2 is null or character_id < ?2)
           order by character_id desc
           limit ?3"#,
        user_id.0,
        before,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Deletes a character (its jobs go with it). False when the user has no such character.
pub async fn delete(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    character_id: CharacterId,
) -> Result<bool, sqlx::Error> {
    let result =
        sqlx::query!("delete from characters where character_id = ?1 and user_id = ?2", character_id.0, user_id.0)
            .execute(db)
            .await?;
    Ok(result.rows_affected() == 1)
}

/// Stores a generated profile, with the prompt set that wrote it, as the character's next
/// version, and marks the character ready.
pub async fn mark_ready(
    db: &mut SqliteConnection,
    character_id: CharacterId,
    profile: &Value,
    brief: &str,
    prompt_version: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let now = now();
    let result = sqlx::query!(
        "update characters set status = 'ready', profile = ?2, brief = ?3, prompt_version = ?4,
                               version = version + 1, updated_at = ?5
         where character_id = ?1",
        character_id.0,
        profile,
        brief,
        prompt_version,
        now,
    )
    .execute(&mut *db)
    .await?;
    if result.rows_affected() != 1 {
        return Ok(false);
    }
    record_version(db, character_id, "generated", &serde_json::json!({})).await?;
    Ok(true)
}

/// Keeps the character's current name, brief and profile as its version of that number.
async fn record_version(
    db: impl SqliteExecutor<'_>,
    character_id: CharacterId,
    change: &str,
    detail: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into character_versions (character_id, version, change, detail, name, brief, profile, created_at)
         select character_id, version, ?2, ?3, name, brief, profile, updated_at from characters
         where character_id = ?1",
        character_id.0,
        change,
        detail,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Marks a character whose generation failed for good.
pub async fn mark_failed(db: impl SqliteExecutor<'_>, character_id: CharacterId) -> Result<(), sqlx::Error> {
    let now = now();
    sqlx::query!(
        "update characters set status = 'failed', updated_at = ?2 where character_id = ?1 and status = 'generating'",
        character_id.0,
        now,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Puts a failed character back to `generating` for a retried generation. False when it is not
/// failed (or not the user's).
pub async fn mark_generating(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    character_id: CharacterId,
) -> Result<bool, sqlx::Error> {
    let now = now();
    let result = sqlx::query!(
        "update characters set status = 'generating', updated_at = ?3
         where character_id = ?1 and user_id = ?2 and status = 'failed'",
        character_id.0,
        user_id.0,
        now,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// True when the user's character is `ready` (the unit of work's write lock keeps it so until
/// the commit).
pub async fn hold_ready(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    character_id: CharacterId,
) -> Result<bool, sqlx::Error> {
    let held = sqlx::query_scalar!(
        r#"select 1 as "held!: i64" from characters where character_id = ?1 and user_id = ?2 and status = 'ready'"#,
        character_id.0,
        user_id.0,
    )
    .fetch_optional(db)
    .await?;
    Ok(held.is_some())
}

/// How many characters the user has.
pub async fn count(db: impl SqliteExecutor<'_>, user_id: UserId) -> Result<i64, sqlx::Error> {
    let row = sqlx::query!(r#"select count(*) as "count!: i64" from characters where user_id = ?1"#, user_id.0)
        .fetch_one(db)
        .await?;
    Ok(row.count)
}

#[async_trait::async_trait]
impl CharacterStore for SqliteStore {
    async fn submit_character(
        &self,
        character: NewCharacter<'_>,
        job: NewJob<'_>,
        quota: &Quota,
    ) -> StoreResult<Submitted> {
        let mut tx = begin_immediate(&self.writer).await?;
        insert(&mut *tx, &character).await?;
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
        get(&self.pool, user_id, character_id).await
    }

    async fn generation_job(
        &self,
        character_id: CharacterId,
    ) -> StoreResult<Option<(fastnpc_shared::ids::JobId, fastnpc_shared::jobs::JobStatus)>> {
        let row = sqlx::query!(
            r#"select job_id as "job_id!: fastnpc_shared::ids::JobId",
                      status as "status!: fastnpc_shared::jobs::JobStatus" from jobs
               where character_id = ?1 and kind = 'generate_character' order by job_id desc limit 1"#,
            character_id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| (row.job_id, row.status)))
    }

    async fn character_by_id(&self, character_id: CharacterId) -> StoreResult<Option<CharacterRecord>> {
        get_by_id(&self.pool, character_id).await
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
        delete(&self.writer, user_id, character_id).await
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
        let mut tx = begin_immediate(&self.writer).await?;
        mark_ready(&mut tx, character_id, profile, brief, prompt_version).await?;
        if !jobs::succeed(&mut tx, claim, result).await? {
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
        let mut tx = begin_immediate(&self.writer).await?;
        let current = sqlx::query!(
            r#"select profile as "profile: Value", version from characters
               where character_id = ?1 and status = 'ready'"#,
            character_id.0,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(current) = current else { return Ok(None) };
        // Whole categories are replaced (SQLite's `json_patch` would merge their fields).
        let mut profile = match current.profile {
            Some(Value::Object(profile)) => profile,
            _ => serde_json::Map::new(),
        };
        profile.extend(regenerated.iter().map(|(key, value)| (key.clone(), value.clone())));
        let profile = Value::Object(profile);
        let now = now();
        sqlx::query!(
            "update characters set profile = ?2, brief = coalesce(?3, brief), version = version + 1, updated_at = ?4
             where character_id = ?1",
            character_id.0,
            profile,
            brief,
            now,
        )
        .execute(&mut *tx)
        .await?;
        record_version(&mut *tx, character_id, "regenerated", detail).await?;
        let version = current.version + 1;
        if !jobs::succeed(&mut tx, claim, &result(version)).await? {
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
        let mut tx = begin_immediate(&self.writer).await?;
        let current = sqlx::query!(
            "select status, version from characters where character_id = ?1 and user_id = ?2",
            character_id.0,
            user_id.0,
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(refused) = Edited::refusal(current.map(|row| (row.status, row.version)), expected_version) {
            return Ok(refused);
        }
        let now = now();
        sqlx::query!(
            "update characters set name = ?2, brief = ?3, profile = ?4, version = version + 1, updated_at = ?5
             where character_id = ?1",
            character_id.0,
            edit.name,
            edit.brief,
            edit.profile,
            now,
        )
        .execute(&mut *tx)
        .await?;
        record_version(&mut *tx, character_id, edit.change, edit.detail).await?;
        let saved = get(&mut *tx, user_id, character_id).await?.ok_or(sqlx::Error::RowNotFound)?;
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
            r#"select v.version, v.change, v.detail as "detail: Value", v.name,
                      v.created_at as "created_at: DateTime<Utc>"
               from character_versions v join characters c using (character_id)
               where v.character_id = ?1 and c.user_id = ?2 and (?3 is null or v.version < ?3)
               order by v.version desc
               limit ?4"#,
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
            r#"select v.version, v.change, v.detail as "detail: Value", v.name, v.brief,
                      v.profile as "profile: Value", v.created_at as "created_at: DateTime<Utc>"
               from character_versions v join characters c using (character_id)
               where v.character_id = ?1 and c.user_id = ?2 and v.version = ?3"#,
            character_id.0,
            user_id.0,
            version,
        )
        .fetch_optional(&self.pool)
        .await
    }

    async fn import_character(&self, imported: ImportedCharacter<'_>, quota: &Quota) -> StoreResult<Submitted> {
        let ImportedCharacter { character, profile, brief, card, detail, avatar } = imported;
        let mut tx = begin_immediate(&self.writer).await?;
        let now = character.created_at;
        sqlx::query!(
            "insert into characters (character_id, user_id, name, status, source, profile, brief, language, version,
                                     created_at, updated_at)
             values (?1, ?2, ?3, 'ready', ?4, ?5, ?6, ?7, 1, ?8, ?8)",
            character.character_id.0,
            character.user_id.0,
            character.name,
            character.source,
            profile,
            brief,
            character.language,
            now,
        )
        .execute(&mut *tx)
        .await?;
        record_version(&mut *tx, character.character_id, "imported", detail).await?;
        sqlx::query!(
            "insert into character_cards (character_id, data, imported_version, created_at) values (?1, ?2, 1, ?3)",
            character.character_id.0,
            card,
            now,
        )
        .execute(&mut *tx)
        .await?;
        if let Some(avatar) = avatar {
            crate::avatars::put_for_character(&mut *tx, character.user_id, character.character_id, avatar).await?;
        }
        if let Some(cap) = over_quota(&mut tx, character.user_id, quota, &[Capped::Characters]).await? {
            return Ok(Submitted::OverQuota(cap));
        }
        tx.commit().await?;
        Ok(Submitted::Created)
    }

    async fn character_card(&self, user_id: UserId, character_id: CharacterId) -> StoreResult<Option<(Value, i64)>> {
        let row = sqlx::query!(
            r#"select k.data as "data: Value", k.imported_version from character_cards k
               join characters c using (character_id)
               where k.character_id = ?1 and c.user_id = ?2"#,
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
        let mut tx = begin_immediate(&self.writer).await?;
        let now = now();
        let copied = sqlx::query!(
            "insert into characters (character_id, user_id, name, status, source, profile, brief, language,
                                     prompt_version, source_snapshot, version, created_at, updated_at)
             select ?3, user_id, coalesce(?4, name), 'ready', source, profile, brief, language,
                    prompt_version, source_snapshot, 1, ?5, ?5
             from characters where character_id = ?1 and user_id = ?2 and status = 'ready'",
            original.0,
            user_id.0,
            copy.0,
            name,
            now,
        )
        .execute(&mut *tx)
        .await?;
        if copied.rows_affected() == 0 {
            return Ok(match get(&mut *tx, user_id, original).await? {
                None => Copied::NotFound,
                Some(original) => Copied::NotReady(original.status),
            });
        }
        let from_version: i64 =
            sqlx::query_scalar!("select version from characters where character_id = ?1", original.0)
                .fetch_one(&mut *tx)
                .await?;
        let detail = serde_json::json!({"from_character": original, "from_version": from_version});
        record_version(&mut *tx, copy, "copied", &detail).await?;
        sqlx::query!(
            "insert into character_avatars (character_id, image, etag, width, height, updated_at)
             select ?2, image, etag, width, height, updated_at from character_avatars where character_id = ?1",
            original.0,
            copy.0,
        )
        .execute(&mut *tx)
        .await?;
        if let Some(cap) = over_quota(&mut tx, user_id, quota, &[Capped::Characters]).await? {
            return Ok(Copied::OverQuota(cap));
        }
        let created = get(&mut *tx, user_id, copy).await?.ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        Ok(Copied::Created(Box::new(created)))
    }
}
