//! A character's short- and long-term memory: two ordered lists, written whole.
//!
//! Every write bumps `characters.memory_version`; a writer that computed its lists from an
//! older version (a compression that spent seconds in the LLM) is refused and starts over, so a
//! concurrent edit is never silently overwritten.

use sqlx::{PgConnection, PgExecutor};

use super::Absorbed;
use super::CompressionCommit;
use super::MemoryWrite;
use super::PgStore;
use super::StoreResult;
use super::groups;
use super::jobs;
use super::jobs::Claim;
use super::messages;
use crate::ids::CharacterId;
use serde_json::Value;

/// One entry. Short-term entries are `subject | action/state/fact | object` strings; long-term
/// entries also carry the importance (0–15) the integration gave them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryEntry {
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub importance: Option<i16>,
}

impl MemoryEntry {
    pub fn new(content: impl Into<String>) -> Self {
        Self { content: content.into(), importance: None }
    }
}

/// Both layers as of one version.
#[derive(Clone, Debug, Default)]
pub struct Memories {
    pub version: i64,
    pub short_term: Vec<MemoryEntry>,
    pub long_term: Vec<MemoryEntry>,
}

/// Size in the budget's unit: characters.
pub fn chars(entries: &[MemoryEntry]) -> usize {
    entries.iter().map(|e| e.content.chars().count()).sum()
}

/// Whether a compression of the character's memory is queued or running.
pub(crate) async fn compression_pending(
    db: impl PgExecutor<'_>,
    character_id: CharacterId,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from jobs where character_id = $1 and kind = 'compress_memory'
           and status in ('queued', 'running')) as "pending!""#,
        character_id.0,
    )
    .fetch_one(db)
    .await
}

/// Reads both layers and their version in one statement (one consistent snapshot).
pub(crate) async fn load(db: impl PgExecutor<'_>, character_id: CharacterId) -> Result<Memories, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select c.memory_version, m.layer as "layer?", m.content as "content?", m.importance
           from characters c
           left join memories m on m.character_id = c.character_id
           where c.character_id = $1
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
pub(crate) async fn replace(
    tx: &mut PgConnection,
    character_id: CharacterId,
    expected: Option<i64>,
    short_term: &[MemoryEntry],
    long_term: &[MemoryEntry],
) -> Result<bool, sqlx::Error> {
    let bumped = sqlx::query!(
        "update characters set memory_version = memory_version + 1
         where character_id = $1 and ($2::bigint is null or memory_version = $2)",
        character_id.0,
        expected,
    )
    .execute(&mut *tx)
    .await?;
    if bumped.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query!("delete from memories where character_id = $1", character_id.0).execute(&mut *tx).await?;
    let mut layers = Vec::new();
    let mut positions = Vec::new();
    let mut contents = Vec::new();
    let mut importances: Vec<Option<i16>> = Vec::new();
    for (layer, entries) in [("short_term", short_term), ("long_term", long_term)] {
        for (position, entry) in entries.iter().enumerate() {
            layers.push(layer.to_owned());
            positions.push(position as i32);
            contents.push(entry.content.clone());
            importances.push(entry.importance);
        }
    }
    sqlx::query!(
        "insert into memories (character_id, layer, position, content, importance)
         select $1, * from unnest($2::text[], $3::int[], $4::text[], $5::smallint[])",
        character_id.0,
        &layers,
        &positions,
        &contents,
        &importances as &[Option<i16>],
    )
    .execute(&mut *tx)
    .await?;
    Ok(true)
}

/// A character's three-layer memory and its compression.
#[async_trait::async_trait]
pub trait MemoryStore: Send + Sync {
    async fn memories(&self, character_id: CharacterId) -> StoreResult<Memories>;
    /// Whether a compression of the character's memory is queued or running (the web app shows
    /// it beside the memory it will change).
    async fn compression_pending(&self, character_id: CharacterId) -> StoreResult<bool>;
    /// A user's own edit: replaces both layers whatever the version.
    async fn replace_memories(
        &self,
        character_id: CharacterId,
        short_term: &[MemoryEntry],
        long_term: &[MemoryEntry],
    ) -> StoreResult<()>;
    /// Ends a compression job: writes the memory (if `write`) and records what it absorbed, and
    /// marks the job succeeded — all or nothing.
    async fn commit_compression(
        &self,
        claim: &Claim,
        character_id: CharacterId,
        write: Option<MemoryWrite<'_>>,
        result: &Value,
    ) -> StoreResult<CompressionCommit>;
}

#[async_trait::async_trait]
impl MemoryStore for PgStore {
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
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
        if !jobs::succeed(&mut *tx, claim, result).await? {
            return Ok(CompressionCommit::LostClaim);
        }
        tx.commit().await?;
        Ok(CompressionCommit::Committed)
    }
}
