//! Users and their login sessions.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::ids::UserId;

/// A user as `/v1/me` shows it.
#[derive(Clone, Debug)]
pub struct UserRecord {
    pub user_id: UserId,
    pub username: String,
    pub bio: String,
    pub ctx_max_chat: i32,
    pub ctx_max_stm: i32,
    pub ctx_max_ltm: i32,
    pub max_group_rounds: i32,
    pub created_at: DateTime<Utc>,
}

/// The name of the case-insensitive username uniqueness index.
pub const USERNAME_KEY: &str = "users_username_lower_key";

pub async fn insert(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    username: &str,
    password_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into users (user_id, username, password_hash) values ($1, $2, $3)",
        user_id.0,
        username,
        password_hash,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The id and password hash of `username` (case-insensitive), for login.
pub async fn credentials(db: impl PgExecutor<'_>, username: &str) -> Result<Option<(UserId, String)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select user_id as "user_id: UserId", password_hash from users where lower(username) = lower($1)"#,
        username,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.user_id, r.password_hash)))
}

pub async fn get(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Option<UserRecord>, sqlx::Error> {
    sqlx::query_as!(
        UserRecord,
        r#"select user_id as "user_id: UserId", username, bio, ctx_max_chat, ctx_max_stm, ctx_max_ltm,
                  max_group_rounds, created_at
           from users where user_id = $1"#,
        user_id.0,
    )
    .fetch_optional(db)
    .await
}

pub async fn insert_session(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
    user_id: UserId,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into sessions (token_hash, user_id, expires_at) values ($1, $2, $3)",
        token_hash,
        user_id.0,
        expires_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The user of a live session: not revoked, not expired.
pub async fn session_user(db: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<Option<UserId>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select user_id as "user_id: UserId" from sessions
           where token_hash = $1 and revoked_at is null and expires_at > now()"#,
        token_hash,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| r.user_id))
}

/// Revokes one session; revoking twice is harmless.
pub async fn revoke_session(db: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query!("update sessions set revoked_at = now() where token_hash = $1 and revoked_at is null", token_hash,)
        .execute(db)
        .await?;
    Ok(())
}

/// Settings to change; `None` keeps the stored value.
pub struct SettingsPatch<'a> {
    pub bio: Option<&'a str>,
    pub ctx_max_chat: Option<i32>,
    pub ctx_max_stm: Option<i32>,
    pub ctx_max_ltm: Option<i32>,
    pub max_group_rounds: Option<i32>,
}

pub async fn update_settings(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    patch: SettingsPatch<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update users set bio = coalesce($2, bio), ctx_max_chat = coalesce($3, ctx_max_chat),
                ctx_max_stm = coalesce($4, ctx_max_stm), ctx_max_ltm = coalesce($5, ctx_max_ltm),
                max_group_rounds = coalesce($6, max_group_rounds), updated_at = now()
         where user_id = $1",
        user_id.0,
        patch.bio,
        patch.ctx_max_chat,
        patch.ctx_max_stm,
        patch.ctx_max_ltm,
        patch.max_group_rounds,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The stored password hash of a user (to re-check the password before sensitive changes).
pub async fn password_hash(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query!("select password_hash from users where user_id = $1", user_id.0).fetch_optional(db).await?;
    Ok(row.map(|r| r.password_hash))
}

/// Sets a new password hash and revokes every session but `keep` (the one making the change).
pub async fn change_password(
    db: &sqlx::PgPool,
    user_id: UserId,
    password_hash: &str,
    keep: Option<&[u8]>,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query!(
        "update users set password_hash = $2, updated_at = now() where user_id = $1",
        user_id.0,
        password_hash
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update sessions set revoked_at = now()
         where user_id = $1 and revoked_at is null and ($2::bytea is null or token_hash <> $2)",
        user_id.0,
        keep,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Deletes a user and, by cascade, everything they own.
pub async fn delete(db: impl PgExecutor<'_>, user_id: UserId) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!("delete from users where user_id = $1", user_id.0).execute(db).await?;
    Ok(result.rows_affected() == 1)
}

/// Forgets sessions that expired or were revoked more than a day ago.
pub async fn purge_sessions(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!(
        "delete from sessions where expires_at < now() - interval '1 day' or revoked_at < now() - interval '1 day'"
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}
