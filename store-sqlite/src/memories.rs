//! A character's short- and long-term memory: two ordered lists, written whole (mirrors
//! `fastnpc_shared::store::memories`).
//!
//! The version check is the same as in Postgres: every write bumps `characters.memory_version`,
//! and a writer that read an older version is refused. Postgres inserts the entries with one
//! `unnest` of arrays; SQLite has no array parameters, and [`replace`] runs inside the caller's
//! transaction anyway, so it inserts them one statement per entry.

use fastnpc_shared::{
    ids::CharacterId,
    store::memories::{Memories, MemoryEntry},
};
use sqlx::{SqliteConnection, SqliteExecutor};

use crate::SqliteStore;
use crate::begin_immediate;
use crate::groups;
use crate::jobs;
use crate::messages;
use crate::now;
use fastnpc_shared::store::Absorbed;
use fastnpc_shared::store::CompressionCommit;
use fastnpc_shared::store::MemoryWrite;
use fastnpc_shared::store::StoreResult;
use fastnpc_shared::store::jobs::Claim;
use fastnpc_shared::store::memories::MemoryStore;
use serde_json::Value;

/// Whether a compression of the character's memory is queued or running.
pub async fn compression_pending(db: impl SqliteExecutor<'_>, character_id: CharacterId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from jobs where character_id = ?1 and kind = 'compress_memory'
           and status in ('queued', 'running')) as "pending!: bool""#,
        character_id.0,
    )
    .fetch_one(db)
    .await
}

/// Reads both layers and their version in one statement (one consistent snapshot).
pub async fn load(db: impl SqliteExecutor<'_>, character_id: CharacterId) -> Result<Memories, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select c.memory_version as "memory_version!: i64", m.layer as "layer?: String",
                  m.content as "content?: String", m.importance as "importance?: i16"
           from characters c
           left join memories m on m.character_id = c.character_id
           where c.character_id = ?1
           order by m.layer, m.position"#,
        character_id.0,
    )
    .fetch_all(db)
    .await?;
    let mut memories = Memories { version: rows.first().map_or(0, |r| r.memory_version), ..Default::default() };
    for row in rows {
        let (Some(layer), Some(content)) = (row.layer, row.content) else { continue };
        let entry = MemoryEntry { content, importance: row.importance };
        match layer.as_str() {
            "short_term" => memories.short_term.push(entry),
            _ => memories.long_term.push(entry),
        }
    }
    Ok(memories)
}

/// Replaces both layers, if the stored version is still `expected` (`None`: unconditionally,
/// for a user's own edit). False when someone else wrote in between.
///
/// `tx` should be a transaction from [`crate::begin_immediate`]: the version check and the
/// writes then see no other writer in between, and a compression that loaded the memories in
/// the same transaction cannot fail with `SQLITE_BUSY` on its first write.
pub async fn replace(
    tx: &mut SqliteConnection,
    character_id: CharacterId,
    expected: Option<i64>,
    short_term: &[MemoryEntry],
    long_term: &[MemoryEntry],
) -> Result<bool, sqlx::Error> {
    let bumped = sqlx::query!(
        "update characters set memory_version = memory_version + 1
         where character_id = ?1 and (?2 is null or memory_version = ?2)",
        character_id.0,
        expected,
    )
    .execute(&mut *tx)
    .await?;
    if bumped.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query!("delete from memories where character_id = ?1", character_id.0).execute(&mut *tx).await?;
    let now = now();
    for (layer, entries) in [("short_term", short_term), ("long_term", long_term)] {
        for (position, entry) in entries.iter().enumerate() {
            let position = position as i64;
            sqlx::query!(
                "insert into memories (character_id, layer, position, content, importance, created_at)
                 values (?1, ?2, ?3, ?4, ?5, ?6)",
                character_id.0,
                layer,
                position,
                entry.content,
                entry.importance,
                now,
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(true)
}

#[async_trait::async_trait]
impl MemoryStore for SqliteStore {
    async fn memories(&self, character_id: CharacterId) -> StoreResult<Memories> {
        load(&self.pool, character_id).await
    }

    async fn compression_pending(&self, character_id: CharacterId) -> StoreResult<bool> {
        compression_pending(&self.pool, character_id).await
    }

    async fn replace_memories(
        &self,
        character_id: CharacterId,
        short_term: &[MemoryEntry],
        long_term: &[MemoryEntry],
    ) -> StoreResult<()> {
        let mut tx = begin_immediate(&self.writer).await?;
        replace(&mut tx, character_id, None, short_term, long_term).await?;
        tx.commit().await
    }

    async fn commit_compression(
        &self,
        claim: &Claim,
        character_id: CharacterId,
        write: Option<MemoryWrite<'_>>,
        result: &Value,
    ) -> StoreResult<CompressionCommit> {
        let mut tx = begin_immediate(&self.writer).await?;
        if let Some(write) = write {
            if !replace(&mut tx, character_id, Some(write.expected_version), write.short_term, write.long_term).await? {
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
}
