//! `GET /v1/system`: what a client needs to know about this deployment before anyone logs in.

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// The deployment's model and input limits.
#[derive(Serialize, ToSchema)]
pub struct System {
    llm: Llm,
    limits: Limits,
}

/// The model this deployment answers with.
#[derive(Serialize, ToSchema)]
pub struct Llm {
    /// True when replies come from the LLM simulator (placeholder text), not a model.
    simulated: bool,
    model: String,
}

/// Input limits, in characters (Unicode scalar values) unless named otherwise.
#[derive(Serialize, ToSchema)]
pub struct Limits {
    name_chars: usize,
    source_chars: usize,
    message_chars: usize,
    bio_chars: usize,
    memory_entry_chars: usize,
    /// Entries per memory layer.
    memory_entries: usize,
    password_min_chars: usize,
    password_max_chars: usize,
}

/// `GET /v1/system` → `{llm: {simulated, model}, limits: {...}}`, without authentication. The web
/// app shows a banner on every page while `llm.simulated` is true (the text is placeholder
/// output), and checks input lengths against `limits` before sending.
#[utoipa::path(
    get,
    operation_id = "get_system",
    path = "/v1/system",
    tag = "system",
    summary = "The deployment's model and input limits",
    security(()),
    responses((status = 200, description = "The deployment", body = System)),
)]
pub async fn get(State(state): State<AppState>) -> Json<System> {
    Json(System {
        llm: Llm { simulated: state.config.llm_simulated, model: state.config.llm_model.clone() },
        limits: Limits {
            name_chars: super::characters::MAX_NAME_CHARS,
            source_chars: fastnpc_shared::domain::source::MAX_SOURCE_CHARS,
            message_chars: super::messages::MAX_MESSAGE_CHARS,
            bio_chars: super::auth::MAX_BIO_CHARS,
            memory_entry_chars: super::memories::MAX_ENTRY_CHARS,
            memory_entries: super::memories::MAX_ENTRIES,
            password_min_chars: super::auth::MIN_PASSWORD_CHARS,
            password_max_chars: super::auth::MAX_PASSWORD_CHARS,
        },
    })
}
