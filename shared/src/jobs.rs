//! Jobs: the unit of slow work, its states, its errors, and the message that carries its id
//! through RabbitMQ.
//!
//! The job *row* in Postgres is the truth (status, progress, result). The queue message carries
//! only the id, so a redelivered or duplicated message can never carry stale instructions: the
//! worker always reads the current row and claims it before doing anything.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::ids::JobId;

/// What a job does. Stored as text in `jobs.kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Nine concurrent category calls plus the brief, then the character is `ready`.
    GenerateCharacter,
    /// One streamed reply of a character to one user message.
    ChatReply,
    /// Session → short-term → long-term memory for one character.
    CompressMemory,
    /// A group's turn loop after a user message: moderator → a character's reply, a few rounds.
    GroupTurn,
    /// One member's memory of a group's transcript, from its point of view.
    CompressGroupMemory,
    /// Chosen categories (and/or the brief) of a ready character written again from its
    /// source; the rest of the profile is kept. Its [`RegenerationParams`] are on the job.
    RegenerateCharacter,
}

/// A job's lifecycle: `queued → running → succeeded | failed | cancelled`. Terminal states are
/// final; every write that ends a job is guarded on the job not being terminal yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

macro_rules! text_enum {
    ($ty:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        // Stored as text: decoding goes through `FromStr`, so a value no variant matches is a
        // decode error naming the value, not a silent default.
        impl sqlx::Type<sqlx::Postgres> for $ty {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $ty {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?.parse()?)
            }
        }
        // The same text column in the embedded (SQLite) store.
        #[cfg(feature = "sqlite")]
        impl sqlx::Type<sqlx::Sqlite> for $ty {
            fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
                <&str as sqlx::Type<sqlx::Sqlite>>::type_info()
            }
            fn compatible(ty: &sqlx::sqlite::SqliteTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Sqlite>>::compatible(ty)
            }
        }
        #[cfg(feature = "sqlite")]
        impl<'r> sqlx::Decode<'r, sqlx::Sqlite> for $ty {
            fn decode(value: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<&str as sqlx::Decode<sqlx::Sqlite>>::decode(value)?.parse()?)
            }
        }
        impl FromStr for $ty {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)*
                    other => Err(UnknownValue(other.to_owned())),
                }
            }
        }
    };
}

text_enum!(JobKind {
    GenerateCharacter => "generate_character",
    ChatReply => "chat_reply",
    CompressMemory => "compress_memory",
    GroupTurn => "group_turn",
    CompressGroupMemory => "compress_group_memory",
    RegenerateCharacter => "regenerate_character",
});
text_enum!(JobStatus {
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
});

/// What a regeneration rewrites: category keys, in the order they were asked for, and whether
/// the brief too. Stored as the job's `params`, so a retry repeats the same request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegenerationParams {
    pub categories: Vec<String>,
    pub brief: bool,
}

/// A stored string that no variant matches (a schema drift between code and database).
#[derive(Debug, thiserror::Error)]
#[error("unknown value `{0}`")]
pub struct UnknownValue(pub String);

/// Why a job failed, as clients see it: a stable machine-readable code and a human message.
/// Never contains prompts, model output or secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

impl JobError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into() }
    }
}

/// The RabbitMQ message body. Versioned and tagged, so a fleet mid-rollout can tell a message it
/// does not understand (it dead-letters it) from one it does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum QueueMessage {
    /// "Run job `job_id`." Everything else is in the job row.
    #[serde(rename = "run_job.v1")]
    RunJobV1 { job_id: JobId },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_message_is_versioned_on_the_wire() {
        let job_id = JobId::new();
        let wire = serde_json::to_value(QueueMessage::RunJobV1 { job_id }).unwrap();
        assert_eq!(wire["type"], "run_job.v1");
        assert_eq!(wire["job_id"], job_id.to_string());
    }

    #[test]
    fn status_text_round_trips() {
        for status in
            [JobStatus::Queued, JobStatus::Running, JobStatus::Succeeded, JobStatus::Failed, JobStatus::Cancelled]
        {
            assert_eq!(status.as_str().parse::<JobStatus>().unwrap(), status);
        }
        assert!("done".parse::<JobStatus>().is_err());
    }
}
