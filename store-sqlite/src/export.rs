//! SQLite queries behind `Store::export_user` and `Store::import_user`, mirroring the Postgres
//! ones in `fastnpc_shared::store::export` (see `fastnpc_shared::store::transfer`).

use crate::SqliteStore;
use crate::begin_immediate;
use crate::is_unique_violation;
use crate::jobs;
use chrono::{DateTime, NaiveDate, Utc};
use fastnpc_shared::store::StoreResult;
use fastnpc_shared::store::transfer::ExportRefusal;
use fastnpc_shared::store::transfer::Imported;
use fastnpc_shared::store::transfer::TransferStore;
use fastnpc_shared::store::transfer::UserExport;
use fastnpc_shared::{
    ids::{CharacterId, GroupId, MessageId, UserId},
    store::transfer::*,
};
use serde_json::Value;
use sqlx::{SqliteConnection, SqliteExecutor};

pub async fn user(db: impl SqliteExecutor<'_>, username: &str) -> Result<Option<ExportedUser>, sqlx::Error> {
    let folded = username.to_lowercase();
    sqlx::query_as!(
        ExportedUser,
        r#"select user_id as "user_id!: UserId", username, password_hash, bio, ctx_max_chat as "ctx_max_chat: i32",
                  ctx_max_stm as "ctx_max_stm: i32", ctx_max_ltm as "ctx_max_ltm: i32",
                  max_group_rounds as "max_group_rounds: i32", language,
                  disabled_at as "disabled_at: DateTime<Utc>", created_at as "created_at: DateTime<Utc>",
                  updated_at as "updated_at: DateTime<Utc>"
           from users where username_lower = ?1"#,
        folded,
    )
    .fetch_optional(db)
    .await
}

/// Everything of `user` but the account row; the caller reads in one transaction (a snapshot).
pub async fn owned(tx: &mut SqliteConnection, user: ExportedUser) -> Result<UserExport, sqlx::Error> {
    let user_id = user.user_id.0;
    let characters = sqlx::query_as!(
        ExportedCharacter,
        r#"select character_id as "character_id!: CharacterId", name, status, source as "source: Value",
                  profile as "profile: Value", brief, memory_version, language, prompt_version,
                  created_at as "created_at: DateTime<Utc>", updated_at as "updated_at: DateTime<Utc>"
           from characters where user_id = ?1 order by character_id"#,
        user_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    let memories = sqlx::query_as!(
        ExportedMemory,
        r#"select m.character_id as "character_id!: CharacterId", m.layer, m.position as "position: i32", m.content,
                  m.importance as "importance: i16", m.created_at as "created_at: DateTime<Utc>"
           from memories m join characters c using (character_id)
           where c.user_id = ?1 order by m.character_id, m.layer, m.position"#,
        user_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    let messages = sqlx::query_as!(
        ExportedMessage,
        r#"select message_id as "message_id!: MessageId", character_id as "character_id!: CharacterId", author, content,
                  compressed as "compressed: bool", job_id as "job_id: uuid::Uuid", reply_to as "reply_to: MessageId",
                  prompt_snapshot, truncated as "truncated: bool", prompt_version,
                  created_at as "created_at: DateTime<Utc>"
           from messages where user_id = ?1 order by message_id"#,
        user_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    let groups = sqlx::query_as!(
        ExportedGroup,
        r#"select group_id as "group_id!: GroupId", name, created_at as "created_at: DateTime<Utc>",
                  updated_at as "updated_at: DateTime<Utc>"
           from groups where user_id = ?1 order by group_id"#,
        user_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    let group_members = sqlx::query_as!(
        ExportedMember,
        r#"select m.group_id as "group_id!: GroupId", m.character_id as "character_id!: CharacterId",
                  m.joined_at as "joined_at: DateTime<Utc>", m.absorbed_upto as "absorbed_upto: MessageId"
           from group_members m join groups g using (group_id)
           where g.user_id = ?1 order by m.group_id, m.character_id"#,
        user_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    let group_messages = sqlx::query_as!(
        ExportedGroupMessage,
        r#"select message_id as "message_id!: MessageId", group_id as "group_id!: GroupId", author,
                  character_id as "character_id: CharacterId", speaker_name, content, moderator as "moderator: Value",
                  prompt_snapshot, job_id as "job_id: uuid::Uuid", round as "round: i32",
                  truncated as "truncated: bool", prompt_version, created_at as "created_at: DateTime<Utc>"
           from group_messages where user_id = ?1 order by message_id"#,
        user_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    let api_keys = sqlx::query_as!(
        ExportedApiKey,
        r#"select key_id as "key_id!: uuid::Uuid", name, prefix, key_hash, created_at as "created_at: DateTime<Utc>",
                  last_used_at as "last_used_at: DateTime<Utc>", revoked_at as "revoked_at: DateTime<Utc>"
           from api_keys where user_id = ?1 order by key_id"#,
        user_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    let usage_days = sqlx::query_as!(
        ExportedUsageDay,
        r#"select day as "day!: NaiveDate", calls, prompt_tokens, completion_tokens
           from llm_usage_daily where user_id = ?1 order by day"#,
        user_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    let character_versions = sqlx::query_as!(
        ExportedVersion,
        r#"select v.character_id as "character_id!: CharacterId", v.version, v.change, v.detail as "detail: Value",
                  v.name, v.brief, v.profile as "profile: Value", v.created_at as "created_at: DateTime<Utc>"
           from character_versions v join characters c using (character_id)
           where c.user_id = ?1 order by v.character_id, v.version"#,
        user_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    let character_cards = sqlx::query_as!(
        ExportedCard,
        r#"select k.character_id as "character_id!: CharacterId", k.data as "data: Value", k.imported_version,
                  k.created_at as "created_at: DateTime<Utc>"
           from character_cards k join characters c using (character_id)
           where c.user_id = ?1 order by k.character_id"#,
        user_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    let avatars = sqlx::query_as!(
        ExportedAvatar,
        r#"select a.character_id as "character_id?: CharacterId", a.image as "image!: Vec<u8>", a.etag as "etag!",
                  a.width as "width!: i32", a.height as "height!: i32",
                  a.updated_at as "updated_at!: DateTime<Utc>"
           from character_avatars a join characters c using (character_id) where c.user_id = ?1
           union all
           select null, image, etag, width, height, updated_at from user_avatars where user_id = ?1"#,
        user_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    // The user's picture first, then the characters' in id order (both stores alike: they
    // disagree on where a SQL sort puts nulls).
    let mut avatars = avatars;
    avatars.sort_by_key(|avatar| avatar.character_id);
    Ok(UserExport {
        format: FORMAT.to_owned(),
        character_versions,
        character_cards,
        avatars,
        user,
        characters,
        memories,
        messages,
        groups,
        group_members,
        group_messages,
        api_keys,
        usage_days,
    })
}

/// Writes every row of `export` in `tx` (a `BEGIN IMMEDIATE` transaction). The caller rolls
/// back on any error.
pub async fn insert_all(tx: &mut SqliteConnection, export: &UserExport) -> Result<(), sqlx::Error> {
    let user = &export.user;
    let user_id = user.user_id.0;
    let folded = user.username.to_lowercase();
    sqlx::query!(
        "insert into users (user_id, username, username_lower, password_hash, bio, ctx_max_chat, ctx_max_stm,
                            ctx_max_ltm, max_group_rounds, language, disabled_at, created_at, updated_at)
         values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        user_id,
        user.username,
        folded,
        user.password_hash,
        user.bio,
        user.ctx_max_chat,
        user.ctx_max_stm,
        user.ctx_max_ltm,
        user.max_group_rounds,
        user.language,
        user.disabled_at,
        user.created_at,
        user.updated_at,
    )
    .execute(&mut *tx)
    .await?;
    for c in &export.characters {
        sqlx::query!(
            "insert into characters (character_id, user_id, name, status, source, profile, brief, memory_version,
                                     language, prompt_version, created_at, updated_at)
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            c.character_id.0,
            user_id,
            c.name,
            c.status,
            c.source,
            c.profile,
            c.brief,
            c.memory_version,
            c.language,
            c.prompt_version,
            c.created_at,
            c.updated_at,
        )
        .execute(&mut *tx)
        .await?;
    }
    for v in &export.character_versions {
        sqlx::query!(
            "insert into character_versions (character_id, version, change, detail, name, brief, profile, created_at)
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            v.character_id.0,
            v.version,
            v.change,
            v.detail,
            v.name,
            v.brief,
            v.profile,
            v.created_at,
        )
        .execute(&mut *tx)
        .await?;
    }
    // A character's version is its newest; a profile without a history (a document written
    // before versions) comes back as version 1.
    sqlx::query!(
        "insert into character_versions (character_id, version, change, name, brief, profile, created_at)
         select character_id, 1, 'imported', name, brief, profile, updated_at from characters c
         where user_id = ?1 and profile is not null
           and not exists (select 1 from character_versions v where v.character_id = c.character_id)",
        user_id,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update characters set version = (select max(v.version) from character_versions v
                                          where v.character_id = characters.character_id)
         where user_id = ?1 and profile is not null",
        user_id,
    )
    .execute(&mut *tx)
    .await?;
    for k in &export.character_cards {
        sqlx::query!(
            "insert into character_cards (character_id, data, imported_version, created_at) values (?1, ?2, ?3, ?4)",
            k.character_id.0,
            k.data,
            k.imported_version,
            k.created_at,
        )
        .execute(&mut *tx)
        .await?;
    }
    for a in &export.avatars {
        let avatar = fastnpc_shared::store::avatars::Avatar {
            image: a.image.clone(),
            etag: a.etag.clone(),
            width: a.width,
            height: a.height,
            updated_at: a.updated_at,
        };
        match a.character_id {
            Some(character_id) => {
                crate::avatars::put_for_character(&mut *tx, user.user_id, character_id, &avatar).await?;
            }
            None => crate::avatars::put_for_user(&mut *tx, user.user_id, &avatar).await?,
        }
    }
    for m in &export.memories {
        sqlx::query!(
            "insert into memories (character_id, layer, position, content, importance, created_at)
             values (?1, ?2, ?3, ?4, ?5, ?6)",
            m.character_id.0,
            m.layer,
            m.position,
            m.content,
            m.importance,
            m.created_at,
        )
        .execute(&mut *tx)
        .await?;
    }
    // Messages before the replies that point at them (ids made by different clocks need not
    // sort a reply after its message).
    let (originals, replies): (Vec<_>, Vec<_>) = export.messages.iter().partition(|m| m.reply_to.is_none());
    for m in originals.into_iter().chain(replies) {
        let reply_to = m.reply_to.map(|id| id.0);
        sqlx::query!(
            "insert into messages (message_id, user_id, character_id, author, content, compressed, job_id, reply_to,
                                   prompt_snapshot, truncated, prompt_version, created_at)
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            m.message_id.0,
            user_id,
            m.character_id.0,
            m.author,
            m.content,
            m.compressed,
            m.job_id,
            reply_to,
            m.prompt_snapshot,
            m.truncated,
            m.prompt_version,
            m.created_at,
        )
        .execute(&mut *tx)
        .await?;
    }
    for g in &export.groups {
        sqlx::query!(
            "insert into groups (group_id, user_id, name, created_at, updated_at) values (?1, ?2, ?3, ?4, ?5)",
            g.group_id.0,
            user_id,
            g.name,
            g.created_at,
            g.updated_at,
        )
        .execute(&mut *tx)
        .await?;
    }
    for m in &export.group_members {
        let absorbed_upto = m.absorbed_upto.map(|id| id.0);
        sqlx::query!(
            "insert into group_members (group_id, character_id, joined_at, absorbed_upto) values (?1, ?2, ?3, ?4)",
            m.group_id.0,
            m.character_id.0,
            m.joined_at,
            absorbed_upto,
        )
        .execute(&mut *tx)
        .await?;
    }
    for m in &export.group_messages {
        let character_id = m.character_id.map(|id| id.0);
        sqlx::query!(
            "insert into group_messages (message_id, group_id, user_id, author, character_id, speaker_name, content,
                                         moderator, prompt_snapshot, job_id, round, truncated, prompt_version, created_at)
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            m.message_id.0,
            m.group_id.0,
            user_id,
            m.author,
            character_id,
            m.speaker_name,
            m.content,
            m.moderator,
            m.prompt_snapshot,
            m.job_id,
            m.round,
            m.truncated,
            m.prompt_version,
            m.created_at,
        )
        .execute(&mut *tx)
        .await?;
    }
    for k in &export.api_keys {
        sqlx::query!(
            "insert into api_keys (key_id, user_id, name, prefix, key_hash, created_at, last_used_at, revoked_at)
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            k.key_id,
            user_id,
            k.name,
            k.prefix,
            k.key_hash,
            k.created_at,
            k.last_used_at,
            k.revoked_at,
        )
        .execute(&mut *tx)
        .await?;
    }
    for d in &export.usage_days {
        sqlx::query!(
            "insert into llm_usage_daily (user_id, day, calls, prompt_tokens, completion_tokens)
             values (?1, ?2, ?3, ?4, ?5)",
            user_id,
            d.day,
            d.calls,
            d.prompt_tokens,
            d.completion_tokens,
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl TransferStore for SqliteStore {
    async fn export_user(&self, username: &str) -> StoreResult<Result<UserExport, ExportRefusal>> {
        // A deferred transaction reads from one WAL snapshot.
        let mut snapshot = self.pool.begin().await?;
        let Some(user) = user(&mut *snapshot, username).await? else {
            return Ok(Err(ExportRefusal::NoSuchUser));
        };
        let active = jobs::active_count(&mut *snapshot, user.user_id).await?;
        if active > 0 {
            return Ok(Err(ExportRefusal::JobsActive(active)));
        }
        let document = owned(&mut snapshot, user).await?;
        snapshot.commit().await?;
        Ok(Ok(document))
    }

    async fn import_user(&self, document: &UserExport) -> StoreResult<Imported> {
        let mut tx = begin_immediate(&self.writer).await?;
        // On an error the transaction is dropped: rolled back, nothing written.
        match insert_all(&mut tx, document).await {
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
