//! `GET /v1/system`: what a client needs to know about this deployment before anyone logs in.

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::state::AppState;

/// `GET /v1/system` → `{llm: {simulated, model}, limits: {...}}`, without authentication. The web
/// app shows a banner on every page while `llm.simulated` is true (the text is placeholder
/// output), and checks input lengths against `limits` before sending.
pub async fn get(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "llm": {
            "simulated": state.config.llm_simulated,
            "model": state.config.llm_model,
        },
        "limits": {
            "name_chars": super::characters::MAX_NAME_CHARS,
            "source_chars": fastnpc_shared::domain::source::MAX_SOURCE_CHARS,
            "message_chars": super::messages::MAX_MESSAGE_CHARS,
            "bio_chars": super::auth::MAX_BIO_CHARS,
            "memory_entry_chars": super::memories::MAX_ENTRY_CHARS,
            "memory_entries": super::memories::MAX_ENTRIES,
            "password_min_chars": super::auth::MIN_PASSWORD_CHARS,
            "password_max_chars": super::auth::MAX_PASSWORD_CHARS,
        },
    }))
}
