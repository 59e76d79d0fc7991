//! `Idempotency-Key` on job-creating POSTs: a repeat from the same user gets the original job
//! back instead of a second one; the same key with a different request is refused (422).
//!
//! The key and a SHA-256 fingerprint of the request (endpoint, target, body) are stored on the
//! job row, in the same transaction that creates it, under a per-user unique index. Two
//! concurrent requests with one key therefore cannot both create a job: the loser's insert fails
//! on the index and it answers with the winner's job.

use axum::http::HeaderMap;
use fastnpc_shared::{ids::UserId, store::jobs::JobRecord};
use sha2::{Digest, Sha256};

use crate::{error::ApiError, state::AppState};

/// The longest key accepted.
const MAX_KEY_LEN: usize = 255;

/// A request's idempotency key and fingerprint.
pub struct Idempotency {
    key: String,
    fingerprint: Vec<u8>,
}

impl Idempotency {
    /// From the request's headers; `None` without the header, 400 when it is malformed.
    /// `request` must identify the endpoint, its target and the body.
    pub fn from_request(headers: &HeaderMap, request: &serde_json::Value) -> Result<Option<Self>, ApiError> {
        let Some(value) = headers.get("idempotency-key") else {
            return Ok(None);
        };
        let key = value.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?.trim();
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(ApiError::bad_request(format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} characters")));
        }
        let fingerprint = Sha256::digest(request.to_string().as_bytes()).to_vec();
        Ok(Some(Self { key: key.to_owned(), fingerprint }))
    }

    /// What the new job row stores.
    pub fn for_new_job(&self) -> (&str, &[u8]) {
        (&self.key, &self.fingerprint)
    }

    /// The job this key created before, if any; 422 when it came with a different request.
    pub async fn original(&self, state: &AppState, user_id: UserId) -> Result<Option<JobRecord>, ApiError> {
        let Some((job_id, fingerprint)) = state.store.job_by_idempotency_key(user_id, &self.key).await? else {
            return Ok(None);
        };
        if fingerprint != self.fingerprint {
            return Err(ApiError::invalid_field("this Idempotency-Key was used with a different request"));
        }
        Ok(state.store.job(user_id, job_id).await?)
    }

    /// After a submission lost the race for its key: the job of the request that won it.
    pub async fn winner(this: Option<&Self>, state: &AppState, user_id: UserId) -> Result<JobRecord, ApiError> {
        let this = this.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("an idempotency conflict without a key")))?;
        this.original(state, user_id).await?.ok_or(ApiError::NotFound)
    }
}
