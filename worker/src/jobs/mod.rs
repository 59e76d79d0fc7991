//! Job handlers, one module per kind. A handler does its work, commits its results together
//! with the job's `succeeded` state, and returns the result shown to clients.

use fastnpc_shared::{
    dispatch,
    ids::{CharacterId, GroupId, JobId, UserId},
    jobs::{JobError, JobKind},
    llm::{LlmError, LlmErrorKind},
    store::{self, jobs::Claim},
};
use tokio_util::sync::CancellationToken;

use crate::Deps;

pub mod chat_reply;
pub mod compress_memory;
pub mod generate_character;
pub mod group_turn;
pub mod regenerate_character;
pub mod source_document;

/// How a job attempt ended, when it did not succeed.
#[derive(Debug)]
pub enum JobFailure {
    /// Final: retrying cannot help (bad input, the provider refused).
    Failed(JobError),
    /// Another attempt may succeed (the LLM or the database was unavailable).
    Retryable(JobError),
    /// Another worker owns the job now; write nothing.
    LostClaim,
    /// The job stopped early on purpose (a group loop interrupted by a newer user message);
    /// it ends `cancelled` with this result.
    Interrupted(serde_json::Value),
}

/// A database error, classified. Transient ones (the connection, the pool, a timeout, a lock
/// conflict another attempt may not meet) are retried as `store_unavailable`; the rest (a row
/// or column that is not there, a value that does not decode, a violated constraint, a bad
/// statement) would fail the same way again and fail the job as `store_error`. It logs nothing:
/// the runner logs the job's failure with its code and message. The message is shown to clients,
/// so it names the kind of error (and the SQLSTATE or SQLite code), never the statement or data.
impl From<sqlx::Error> for JobFailure {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let unavailable = |message: &str| Self::Retryable(JobError::new("store_unavailable", message));
        let failed = |message: String| Self::Failed(JobError::new("store_error", message));
        match error {
            E::Database(_) if store::is_transient(&error) => unavailable("the database was busy or unavailable"),
            _ if store::is_transient(&error) => unavailable("the database was unavailable"),
            E::Database(db) => {
                let code = db.code().map(|code| code.into_owned());
                let code = code.as_deref();
                let what = match db.kind() {
                    sqlx::error::ErrorKind::UniqueViolation => "a unique constraint was violated",
                    sqlx::error::ErrorKind::ForeignKeyViolation => "a foreign key constraint was violated",
                    sqlx::error::ErrorKind::NotNullViolation => "a not-null constraint was violated",
                    sqlx::error::ErrorKind::CheckViolation => "a check constraint was violated",
                    _ => "database error",
                };
                failed(format!("the database refused the job's statement: {what} (code {})", code.unwrap_or("none")))
            }
            E::RowNotFound => failed("a record the job needs was not found".into()),
            E::TypeNotFound { .. } | E::ColumnNotFound(_) | E::ColumnIndexOutOfBounds { .. } => {
                failed("the database schema does not match this worker".into())
            }
            E::ColumnDecode { .. } | E::Decode(_) | E::Encode(_) => {
                failed("a stored value could not be read or written".into())
            }
            _ => failed("the database could not run the job's statement".into()),
        }
    }
}

impl From<LlmError> for JobFailure {
    fn from(error: LlmError) -> Self {
        let job_error = JobError::new(error.kind.code(), error.message);
        if error.kind.is_transient() { Self::Retryable(job_error) } else { Self::Failed(job_error) }
    }
}

/// The job's failure when no reply for `what` was usable after `attempts`.
pub(crate) fn malformed(what: &str, attempts: u32, reason: &str) -> JobFailure {
    JobFailure::Failed(JobError::new(
        LlmErrorKind::Malformed.code(),
        format!("{what}: no valid reply after {attempts} attempts: {reason}"),
    ))
}

/// Runs the claimed job's handler.
pub async fn run(deps: &Deps, claim: &Claim, cancel: &CancellationToken) -> Result<serde_json::Value, JobFailure> {
    match claim.kind {
        JobKind::GenerateCharacter => generate_character::run(deps, claim, cancel).await,
        JobKind::ChatReply => chat_reply::run(deps, claim, cancel).await,
        JobKind::CompressMemory | JobKind::CompressGroupMemory => compress_memory::run(deps, claim, cancel).await,
        JobKind::GroupTurn => group_turn::run(deps, claim, cancel).await,
        JobKind::RegenerateCharacter => regenerate_character::run(deps, claim, cancel).await,
    }
}

/// Schedules a compression of a character's memory — of its single chat, or of one group with
/// `group_id` — unless one is already waiting (it will see everything when it runs). It shares
/// the character's `memory:` serial key, so no two compressions of one memory ever overlap.
pub(crate) async fn schedule_compression(
    deps: &Deps,
    user_id: UserId,
    character_id: CharacterId,
    group_id: Option<GroupId>,
) -> Result<(), sqlx::Error> {
    if deps.store.compression_queued(character_id, group_id).await? {
        return Ok(());
    }
    let job_id = JobId::new();
    let kind = if group_id.is_some() { JobKind::CompressGroupMemory } else { JobKind::CompressMemory };
    deps.store
        .insert_job(store::jobs::NewJob {
            job_id,
            user_id,
            kind,
            character_id: Some(character_id),
            message_id: None,
            group_id,
            serial_key: Some(store::jobs::serial::memory(character_id)),
            progress_total: 0,
            idempotency: None,
            params: None,
        })
        .await?;
    tracing::info!(memory_job.id = %job_id, kind = kind.as_str(), "scheduled memory compression");
    dispatch::enqueue_new(deps.store.as_ref(), deps.events.as_ref(), deps.publisher.as_ref(), job_id).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, error::Error as StdError, fmt};

    use sqlx::error::{DatabaseError, ErrorKind};

    use super::*;

    /// A database error as a driver returns one, with a code and a kind.
    #[derive(Debug)]
    struct DbError {
        code: &'static str,
        kind: ErrorKind,
    }

    impl fmt::Display for DbError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "database error {}", self.code)
        }
    }

    impl StdError for DbError {}

    impl DatabaseError for DbError {
        fn message(&self) -> &str {
            "secret row data"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(self.code.into())
        }
        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            match self.kind {
                ErrorKind::UniqueViolation => ErrorKind::UniqueViolation,
                ErrorKind::ForeignKeyViolation => ErrorKind::ForeignKeyViolation,
                ErrorKind::NotNullViolation => ErrorKind::NotNullViolation,
                ErrorKind::CheckViolation => ErrorKind::CheckViolation,
                _ => ErrorKind::Other,
            }
        }
    }

    fn database(code: &'static str, kind: ErrorKind) -> sqlx::Error {
        sqlx::Error::Database(Box::new(DbError { code, kind }))
    }

    /// The failure's variant and code.
    fn classify(error: sqlx::Error) -> (&'static str, String, String) {
        match JobFailure::from(error) {
            JobFailure::Retryable(e) => ("retryable", e.code, e.message),
            JobFailure::Failed(e) => ("failed", e.code, e.message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn connection_pool_and_timeout_errors_are_retried() {
        let transient = [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Io(std::io::Error::other("connection reset")),
            sqlx::Error::Protocol("unexpected message".into()),
            database("40001", ErrorKind::Other), // serialization_failure
            database("40P01", ErrorKind::Other), // deadlock_detected
            database("57P01", ErrorKind::Other), // admin_shutdown
            database("08006", ErrorKind::Other), // connection_failure
            database("5", ErrorKind::Other),     // SQLITE_BUSY
            database("517", ErrorKind::Other),   // SQLITE_BUSY_SNAPSHOT
            database("6", ErrorKind::Other),     // SQLITE_LOCKED
        ];
        for error in transient {
            let shown = error.to_string();
            let (variant, code, _) = classify(error);
            assert_eq!((variant, code.as_str()), ("retryable", "store_unavailable"), "{shown}");
        }
    }

    #[test]
    fn errors_a_retry_cannot_fix_fail_the_job() {
        let permanent = [
            sqlx::Error::RowNotFound,
            sqlx::Error::ColumnNotFound("x".into()),
            sqlx::Error::Decode("not a uuid".into()),
            sqlx::Error::Configuration("bad url".into()),
            database("23505", ErrorKind::UniqueViolation),
            database("23503", ErrorKind::ForeignKeyViolation),
            database("22021", ErrorKind::Other), // a Postgres code whose low byte would read as BUSY
            database("42703", ErrorKind::Other), // undefined_column
            database("2067", ErrorKind::UniqueViolation), // SQLITE_CONSTRAINT_UNIQUE
            database("1", ErrorKind::Other),     // SQLITE_ERROR
        ];
        for error in permanent {
            let shown = error.to_string();
            let (variant, code, message) = classify(error);
            assert_eq!((variant, code.as_str()), ("failed", "store_error"), "{shown}");
            assert!(!message.contains("secret"), "the driver's message stays out of the job's: {message}");
        }
        let (_, _, message) = classify(database("23505", ErrorKind::UniqueViolation));
        assert_eq!(message, "the database refused the job's statement: a unique constraint was violated (code 23505)");
    }

    #[test]
    fn transient_codes_are_told_apart_from_permanent_ones() {
        for code in ["40001", "40P01", "55P03", "57014", "57P03", "53300", "08001", "5", "6", "261", "262", "517"] {
            assert!(store::is_transient_database_code(code), "{code}");
        }
        for code in ["23505", "23503", "22021", "22P02", "42P01", "0", "1", "19", "2067", "787", "busy"] {
            assert!(!store::is_transient_database_code(code), "{code}");
        }
    }
}
