//! Pictures of characters and users; mirrors `fastnpc_shared::store::avatars`.

use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::{CharacterId, UserId},
    store::{
        StoreResult,
        avatars::{Avatar, AvatarOf, AvatarStore},
    },
};
use sqlx::SqliteExecutor;

use crate::SqliteStore;

/// Sets (or replaces) the picture of the user's character; false when the character is not the
/// user's (see the Postgres twin).
pub async fn put_for_character(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    character_id: CharacterId,
    avatar: &Avatar,
) -> Result<bool, sqlx::Error> {
    let written = sqlx::query!(
        "insert into character_avatars (character_id, image, etag, width, height, updated_at)
         select character_id, ?3, ?4, ?5, ?6, ?7 from characters where character_id = ?1 and user_id = ?2
         on conflict (character_id) do update
         set image = excluded.image, etag = excluded.etag, width = excluded.width,
             height = excluded.height, updated_at = excluded.updated_at",
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
pub async fn put_for_user(db: impl SqliteExecutor<'_>, user_id: UserId, avatar: &Avatar) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into user_avatars (user_id, image, etag, width, height, updated_at)
         values (?1, ?2, ?3, ?4, ?5, ?6)
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
impl AvatarStore for SqliteStore {
    async fn put_avatar(&self, user_id: UserId, of: AvatarOf, avatar: &Avatar) -> StoreResult<bool> {
        match of {
            AvatarOf::Character(character_id) => put_for_character(&self.writer, user_id, character_id, avatar).await,
            AvatarOf::User => put_for_user(&self.writer, user_id, avatar).await.map(|()| true),
        }
    }

    async fn avatar(&self, user_id: UserId, of: AvatarOf) -> StoreResult<Option<Avatar>> {
        match of {
            AvatarOf::Character(character_id) => {
                sqlx::query_as!(
                    Avatar,
                    r#"select a.image, a.etag, a.width as "width: i32", a.height as "height: i32",
                              a.updated_at as "updated_at: DateTime<Utc>"
                       from character_avatars a join characters c using (character_id)
                       where a.character_id = ?1 and c.user_id = ?2"#,
                    character_id.0,
                    user_id.0,
                )
                .fetch_optional(&self.pool)
                .await
            }
            AvatarOf::User => {
                sqlx::query_as!(
                    Avatar,
                    r#"select image, etag, width as "width: i32", height as "height: i32",
                              updated_at as "updated_at: DateTime<Utc>"
                       from user_avatars where user_id = ?1"#,
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
                "delete from character_avatars
                 where character_id = ?1 and character_id in (select character_id from characters where user_id = ?2)",
                character_id.0,
                user_id.0,
            )
            .execute(&self.writer)
            .await?
            .rows_affected(),
            AvatarOf::User => sqlx::query!("delete from user_avatars where user_id = ?1", user_id.0)
                .execute(&self.writer)
                .await?
                .rows_affected(),
        };
        Ok(deleted == 1)
    }
}
