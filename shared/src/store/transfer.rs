//! One user's data as a portable document: what `fastnpc export` writes and `fastnpc import`
//! reads, to move a user between stores (the embedded SQLite store to Postgres, or back).
//!
//! It holds what the user owns and would miss: the account (with its password hash, so the
//! password keeps working), characters with their profiles, version history, memories,
//! pictures and the cards they were imported from, conversations, groups and API keys (hashes
//! only), the user's picture, and the LLM spend per day (so the daily budget and the usage
//! history move with the user). It leaves out what is operational and rebuilt by use: sessions
//! (log in again) and the job history. Ids are kept, so links between rows (a reply to its
//! message, a member's group cursor) survive, and a second import of the same document is
//! refused instead of duplicating anything.
//!
//! Fields added after the format's first version have serde defaults (the values the migration
//! that added their columns gives old rows), so a document written before them still imports.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreResult;
use crate::ids::{CharacterId, GroupId, MessageId, UserId};

/// The document's format version; a reader refuses versions it does not know.
pub const FORMAT: &str = "fastnpc.user-export.v1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserExport {
    pub format: String,
    pub user: ExportedUser,
    pub characters: Vec<ExportedCharacter>,
    pub memories: Vec<ExportedMemory>,
    pub messages: Vec<ExportedMessage>,
    pub groups: Vec<ExportedGroup>,
    pub group_members: Vec<ExportedMember>,
    pub group_messages: Vec<ExportedGroupMessage>,
    pub api_keys: Vec<ExportedApiKey>,
    #[serde(default)]
    pub usage_days: Vec<ExportedUsageDay>,
    /// Every version of every character. A document without them (written before versions)
    /// imports each profile as its version 1.
    #[serde(default)]
    pub character_versions: Vec<ExportedVersion>,
    #[serde(default)]
    pub character_cards: Vec<ExportedCard>,
    /// The pictures of the user's characters and of the user.
    #[serde(default)]
    pub avatars: Vec<ExportedAvatar>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedUser {
    pub user_id: UserId,
    pub username: String,
    pub password_hash: String,
    pub bio: String,
    pub ctx_max_chat: i32,
    pub ctx_max_stm: i32,
    pub ctx_max_ltm: i32,
    pub max_group_rounds: i32,
    #[serde(default = "chinese")]
    pub language: String,
    /// A disabled account stays disabled where it moves.
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedCharacter {
    pub character_id: CharacterId,
    pub name: String,
    pub status: String,
    pub source: Value,
    pub profile: Option<Value>,
    pub brief: Option<String>,
    pub memory_version: i64,
    #[serde(default = "chinese")]
    pub language: String,
    #[serde(default)]
    pub prompt_version: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Every character was Chinese before characters had a language, and every user before users
/// had one.
fn chinese() -> String {
    "zh".to_owned()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedMemory {
    pub character_id: CharacterId,
    pub layer: String,
    pub position: i32,
    pub content: String,
    pub importance: Option<i16>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedMessage {
    pub message_id: MessageId,
    pub character_id: CharacterId,
    pub author: String,
    pub content: String,
    pub compressed: bool,
    pub job_id: Option<uuid::Uuid>,
    pub reply_to: Option<MessageId>,
    pub prompt_snapshot: Option<String>,
    #[serde(default)]
    pub truncated: bool,
    #[serde(default)]
    pub prompt_version: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedGroup {
    pub group_id: GroupId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedMember {
    pub group_id: GroupId,
    pub character_id: CharacterId,
    pub joined_at: DateTime<Utc>,
    pub absorbed_upto: Option<MessageId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedGroupMessage {
    pub message_id: MessageId,
    pub group_id: GroupId,
    pub author: String,
    pub character_id: Option<CharacterId>,
    pub speaker_name: String,
    pub content: String,
    pub moderator: Option<Value>,
    pub prompt_snapshot: Option<String>,
    pub job_id: Option<uuid::Uuid>,
    pub round: Option<i32>,
    #[serde(default)]
    pub truncated: bool,
    #[serde(default)]
    pub prompt_version: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedApiKey {
    pub key_id: uuid::Uuid,
    pub name: String,
    pub prefix: String,
    pub key_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The user's LLM spend on one UTC day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedUsageDay {
    pub day: NaiveDate,
    pub calls: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// One version of a character's name, brief and profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedVersion {
    pub character_id: CharacterId,
    pub version: i64,
    pub change: String,
    pub detail: Value,
    pub name: String,
    pub brief: Option<String>,
    pub profile: Value,
    pub created_at: DateTime<Utc>,
}

/// The card a character was imported from (its `data`), kept for what FastNPC does not model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedCard {
    pub character_id: CharacterId,
    pub data: Value,
    pub imported_version: i64,
    pub created_at: DateTime<Utc>,
}

/// A picture: of a character, or of the user when `character_id` is null. The PNG is base64.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedAvatar {
    pub character_id: Option<CharacterId>,
    #[serde(with = "base64_bytes")]
    pub image: Vec<u8>,
    pub etag: String,
    pub width: i32,
    pub height: i32,
    pub updated_at: DateTime<Utc>,
}

/// Bytes as a base64 string, so the document stays JSON text.
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD.decode(text).map_err(D::Error::custom)
    }
}

/// Why an export was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportRefusal {
    NoSuchUser,
    /// Jobs of the user are queued or running; their results would be missing from the copy.
    JobsActive(i64),
}

/// How an import ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imported {
    Done,
    /// Nothing was written: the target already has an account with that name.
    UsernameTaken,
    /// Nothing was written: the target already has rows with these ids (imported before?).
    IdsTaken,
}

/// Moving a user between stores .
#[async_trait::async_trait]
pub trait TransferStore: Send + Sync {
    /// One user's data, read in one snapshot; refused while their jobs are queued or running.
    async fn export_user(&self, username: &str) -> StoreResult<Result<UserExport, ExportRefusal>>;
    /// Writes an exported user, all or nothing.
    async fn import_user(&self, export: &UserExport) -> StoreResult<Imported>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_exported_before_users_had_a_language_imports_as_chinese() {
        let older = serde_json::json!({
            "user_id": "019ad2a4-0000-7000-8000-000000000001",
            "username": "ada",
            "password_hash": "$argon2id$...",
            "bio": "",
            "ctx_max_chat": 3000,
            "ctx_max_stm": 3000,
            "ctx_max_ltm": 4000,
            "max_group_rounds": 3,
            "disabled_at": null,
            "created_at": "2026-11-26T00:00:00Z",
            "updated_at": "2026-11-26T00:00:00Z",
        });
        let user: ExportedUser = serde_json::from_value(older).unwrap();
        assert_eq!(user.language, "zh");
        let english = ExportedUser { language: "en".into(), ..user };
        let again: ExportedUser = serde_json::from_value(serde_json::to_value(&english).unwrap()).unwrap();
        assert_eq!(again, english);
    }
}
