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
use utoipa::{IntoParams, ToSchema};

use crate::{error::ApiError, extract::AuthUser, state::AppState};

/// The language edition searched when none is named.
const DEFAULT_WIKIPEDIA_LANG: &str = "zh";

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// The encyclopedia: `wikipedia` or `baike`.
    #[param(value_type = SourceSearchKind, inline)]
    kind: String,
    /// Wikipedia's language edition (`zh` by default), e.g. `en`, `zh-yue`; not with `kind=baike`.
    #[serde(default)]
    #[param(pattern = "^[a-z]{2,12}(-[a-z]{2,12})*$", max_length = 24)]
    lang: Option<String>,
    /// The name: 1 to 255 characters after trimming, no control characters, nor those the
    /// encyclopedia's titles cannot have (`|#<>[]{}` for Wikipedia, `/?#` for Baike).
    q: String,
}

/// The encyclopedias `kind` names.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // A description only: `kind` is read as text, so a wrong one gets a detail naming it.
enum SourceSearchKind {
    Wikipedia,
    Baike,
}

/// The entries a name may mean, best first.
#[derive(Serialize, ToSchema)]
pub struct SourceSearchResults {
    /// Empty when nothing matches.
    candidates: Vec<Candidate>,
}

/// `GET /v1/sources/search?kind=wikipedia&lang=zh&q=李白` → `{candidates: [{title, id?,
/// description, url}]}`, best first; none is an empty list. Counts against the user's
/// per-minute submission budget.
#[utoipa::path(
    get,
    path = "/v1/sources/search",
    tag = "sources",
    summary = "Search an encyclopedia for the entries a name may mean",
    description = "To pick the right entry before creating a character from it (its `title`, and `id` for \
        Baike). Counts against the per-minute budget of job submissions and searches.",
    params(SearchParams),
    responses(
        (status = 200, description = "The candidates, best first", body = SourceSearchResults),
        (status = 422, description = "`/problems/invalid-field`: an unknown `kind`, `lang` with `kind=baike`, \
            a malformed `lang`, or an unacceptable `q` (named in the detail)", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
        (status = 429, description = "Too many job submissions and searches this minute (`Retry-After`)",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 502, description = "`/problems/source-unavailable`, `source-not-found` or `source-blocked`: \
            the encyclopedia failed or did not answer", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
    ),
)]
pub async fn search(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Query(params): Query<SearchParams>,
) -> Result<Json<SourceSearchResults>, ApiError> {
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
    Ok(Json(SourceSearchResults { candidates }))
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
