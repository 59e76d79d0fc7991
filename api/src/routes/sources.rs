//! `GET /v1/sources/search`: the entries a name may mean in an encyclopedia, so a user picks the
//! right person before a character is created from it.

use axum::{
    Json,
    extract::{Query, State},
};
use fastnpc_shared::{
    domain::CharacterSource,
    sources::{Candidate, SearchIn, SourceFailure},
};
use serde::{Deserialize, Serialize};

use crate::{error::ApiError, extract::AuthUser, state::AppState};

/// The language edition searched when none is named.
const DEFAULT_WIKIPEDIA_LANG: &str = "zh";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// `wikipedia` or `baike`.
    kind: String,
    /// Wikipedia's language edition.
    #[serde(default)]
    lang: Option<String>,
    q: String,
}

#[derive(Serialize)]
pub struct SearchResults {
    candidates: Vec<Candidate>,
}

/// `GET /v1/sources/search?kind=wikipedia&lang=zh&q=李白` → `{candidates: [{title, id?,
/// description, url}]}`, best first; none is an empty list. Counts against the user's
/// per-minute submission budget.
pub async fn search(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Query(params): Query<SearchParams>,
) -> Result<Json<SearchResults>, ApiError> {
    let text = params.q.trim().to_owned();
    // The same rules as a source of that kind: what can be searched can be created.
    let (within, as_source) = match params.kind.as_str() {
        "wikipedia" => {
            let lang = params.lang.unwrap_or_else(|| DEFAULT_WIKIPEDIA_LANG.to_owned());
            (SearchIn::Wikipedia { lang: lang.clone() }, CharacterSource::Wikipedia { lang, title: text.clone() })
        }
        "baike" if params.lang.is_none() => (SearchIn::Baike, CharacterSource::Baike { title: text.clone(), id: None }),
        "baike" => return Err(ApiError::invalid_field("lang applies to kind=wikipedia only")),
        other => {
            return Err(ApiError::invalid_field(format!("kind must be `wikipedia` or `baike`, not `{other}`")));
        }
    };
    as_source.validate().map_err(|error| ApiError::invalid_field(error.to_string().replace("source.title", "q")))?;
    crate::limits::admit_search(&state, user_id).await?;
    let candidates = state.sources.search(&within, &text).await.map_err(source_failed)?;
    Ok(Json(SearchResults { candidates }))
}

/// A source that failed a request which needed it (a search): `502`, naming it.
pub(crate) fn source_failed(failure: SourceFailure) -> ApiError {
    let code = match failure.code() {
        "source_not_found" => "source-not-found",
        "source_blocked" => "source-blocked",
        _ => "source-unavailable",
    };
    ApiError::SourceFailed { code, detail: failure.to_string() }
}
