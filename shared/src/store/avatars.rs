//! Pictures of characters and users: a PNG the API re-encoded itself (see the API's `avatars`
//! module), kept in the database so its backup holds them. A character's picture is reached
//! through its owner: another user's character has none, exactly as a missing one.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::{PgStore, StoreResult};
use crate::ids::{CharacterId, UserId};

/// Whose picture: one of the user's characters, or the user's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvatarOf {
    Character(CharacterId),
    User,
}

/// A stored picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Avatar {
    /// PNG bytes.
    pub image: Vec<u8>,
    /// A hash of `image`, for conditional requests.
    pub etag: String,
    pub width: i32,
    pub height: i32,
    pub updated_at: DateTime<Utc>,
}

#[async_trait::async_trait]
pub trait AvatarStore: Send + Sync {
    /// Sets (or replaces) the picture; false when `of` is a character that is not the user's.
    async fn put_avatar(&self, user_id: UserId, of: AvatarOf, avatar: &Avatar) -> StoreResult<bool>;
    async fn avatar(&self, user_id: UserId, of: AvatarOf) -> StoreResult<Option<Avatar>>;
    /// False when there was no picture (or the character is not the user's).
    async fn delete_avatar(&self, user_id: UserId, of: AvatarOf) -> StoreResult<bool>;
}

/// Sets (or replaces) the picture of the user's character; false when the character is not the
/// user's. One statement for an upload and for the units of work that create a character with
/// its picture (a card import, an account import).
pub(crate) async fn put_for_character(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    character_id: CharacterId,
    avatar: &Avatar,
) -> Result<bool, sqlx::Error> {
    let written = sqlx::query!(
        "insert into character_avatars (character_id, image, etag, width, height, updated_at)
         select character_id, $3, $4, $5, $6, $7 from characters where character_id = $1 and user_id = $2
         on conflict (character_id) do update
         set image = excluded.image, etag = excluded.etag, width = excluded.width, height = excluded.height,
             updated_at = excluded.updated_at",
        character_id.0,
        user_id.0,
        avatar.image,
        avatar.etag,
        avatar.width,
        avatar.height,
        avatar.updated_at,
    )
    .execute(db)
    .await?;
    Ok(written.rows_affected() == 1)
}

/// Sets the user's picture.
pub(crate) async fn put_for_user(db: impl PgExecutor<'_>, user_id: UserId, avatar: &Avatar) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into user_avatars (user_id, image, etag, width, height, updated_at)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (user_id) do update
         set image = excluded.image, etag = excluded.etag, width = excluded.width,
             height = excluded.height, updated_at = excluded.updated_at",
        user_id.0,
        avatar.image,
        avatar.etag,
        avatar.width,
        avatar.height,
        avatar.updated_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl AvatarStore for PgStore {
    async fn put_avatar(&self, user_id: UserId, of: AvatarOf, avatar: &Avatar) -> StoreResult<bool> {
        match of {
            AvatarOf::Character(character_id) => put_for_character(&self.pool, user_id, character_id, avatar).await,
            AvatarOf::User => put_for_user(&self.pool, user_id, avatar).await.map(|()| true),
        }
    }

    async fn avatar(&self, user_id: UserId, of: AvatarOf) -> StoreResult<Option<Avatar>> {
        match of {
            AvatarOf::Character(character_id) => {
                sqlx::query_as!(
                    Avatar,
                    "select a.image, a.etag, a.width, a.height, a.updated_at
                     from character_avatars a join characters c using (character_id)
                     where a.character_id = $1 and c.user_id = $2",
                    character_id.0,
                    user_id.0,
                )
                .fetch_optional(&self.pool)
                .await
            }
            AvatarOf::User => {
                sqlx::query_as!(
                    Avatar,
                    "select image, etag, width, height, updated_at from user_avatars where user_id = $1",
                    user_id.0,
                )
                .fetch_optional(&self.pool)
                .await
            }
        }
    }

    async fn delete_avatar(&self, user_id: UserId, of: AvatarOf) -> StoreResult<bool> {
        let deleted = match of {
            AvatarOf::Character(character_id) => sqlx::query!(
                "delete from character_avatars a using characters c
                 where a.character_id = $1 and c.character_id = a.character_id and c.user_id = $2",
                character_id.0,
                user_id.0,
            )
            .execute(&self.pool)
            .await?
            .rows_affected(),
            AvatarOf::User => sqlx::query!("delete from user_avatars where user_id = $1", user_id.0)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        };
        Ok(deleted == 1)
    }
}
