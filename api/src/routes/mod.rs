//! Routes, one module per resource. Paths are `/v1/...`; health probes are unversioned.

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

pub mod admin;
pub mod api_keys;
pub mod auth;
pub mod avatars;
pub mod cards;
pub mod character_edits;
pub mod characters;
pub mod groups;
pub mod health;
pub mod jobs;
pub mod memories;
pub mod messages;
pub mod regeneration;
pub mod sources;
pub mod system;
pub mod usage;

/// The routes and their OpenAPI description, from one list (see [`crate::openapi`]). Routes on
/// one path are registered together: `routes!` takes the handlers of one path.
pub fn router() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::logout_everywhere))
        .routes(routes!(auth::change_password))
        .routes(routes!(auth::me, auth::update_me, auth::delete_me))
        .routes(routes!(avatars::put_mine, avatars::get_mine, avatars::delete_mine))
        .routes(routes!(usage::mine))
        .routes(routes!(api_keys::create, api_keys::list))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(sources::search))
        .routes(routes!(admin::list_users))
        .routes(routes!(admin::disable_user))
        .routes(routes!(admin::enable_user))
        .routes(routes!(admin::stats))
        .routes(routes!(messages::send, messages::history))
        .routes(routes!(memories::get, memories::replace))
        .routes(routes!(groups::create, groups::list))
        .routes(routes!(groups::get, groups::patch, groups::delete))
        .routes(routes!(groups::add_member))
        .routes(routes!(groups::remove_member))
        .routes(routes!(groups::send, groups::history))
        .routes(routes!(system::get))
        .routes(routes!(characters::create, characters::list))
        .routes(routes!(characters::get, character_edits::patch, characters::delete))
        .routes(routes!(characters::copy))
        .routes(routes!(regeneration::regenerate))
        .routes(routes!(avatars::put_character, avatars::get_character, avatars::delete_character))
        .routes(routes!(cards::export))
        .routes(routes!(cards::import))
        .routes(routes!(character_edits::versions))
        .routes(routes!(character_edits::version))
        .routes(routes!(character_edits::restore))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::retry))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::stream_token))
        .routes(routes!(jobs::events))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(crate::openapi::document))
        .split_for_parts();
    crate::openapi::complete(&mut doc);
    let router = router.layer(axum::Extension(crate::openapi::Document::new(&doc)));
    (router, doc)
}

/// Parses a path id; a malformed id is as unknown as a missing one.
pub(crate) fn parse_id<T: std::str::FromStr>(raw: &str) -> Result<T, crate::error::ApiError> {
    raw.parse().map_err(|_| crate::error::ApiError::NotFound)
}

/// A JSON response with a `Location` header (`201` for a created resource, `202` for a job).
pub(crate) fn with_location(
    status: axum::http::StatusCode,
    body: &impl serde::Serialize,
    location: &str,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(location) = axum::http::HeaderValue::from_str(location) {
        response.headers_mut().insert(axum::http::header::LOCATION, location);
    }
    response
}

/// A listing's page size: `limit`, 50 by default, 1 to 200.
pub(crate) fn page_limit(limit: Option<i64>) -> Result<i64, crate::error::ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(crate::error::ApiError::invalid_field("limit must be between 1 and 200"));
    }
    Ok(limit)
}

/// The cursor of the page after `items`: the last item's id when the page is full (there may be
/// more), none when it is not (this was the last page).
pub(crate) fn next_cursor<T, C>(items: &[T], limit: i64, id: impl Fn(&T) -> C) -> Option<C> {
    if items.len() as i64 == limit { items.last().map(id) } else { None }
}

/// `?include=prompt`: whether to show replies' system prompts.
pub(crate) fn include_prompt(include: Option<&str>) -> Result<bool, crate::error::ApiError> {
    match include {
        None => Ok(false),
        Some("prompt") => Ok(true),
        Some(other) => {
            Err(crate::error::ApiError::invalid_field(format!("include: unknown value `{other}`; use `prompt`")))
        }
    }
}

#[cfg(test)]
mod description_tests {
    /// The router is the description's route list and nothing else: every handler goes through
    /// `routes!` (which needs its `#[utoipa::path]`), none through a plain `.route`, and the
    /// description has exactly one operation per handler listed.
    #[test]
    fn every_route_is_described_and_every_description_is_routed() {
        let source = include_str!("mod.rs");
        let body = &source[source.find("pub fn router()").unwrap()..source.find(".split_for_parts()").unwrap()];
        for plain in [".route(", ".merge(", ".nest(", ".fallback(", ".route_service("] {
            assert!(!body.contains(plain), "routes::router registers a route outside the description: {plain}");
        }
        let handlers: usize = body
            .split("routes!(")
            .skip(1)
            .map(|list| list[..list.find(')').unwrap()].split(',').filter(|h| !h.trim().is_empty()).count())
            .sum();
        let (_, doc) = super::router();
        let operations: usize = doc
            .paths
            .paths
            .values()
            .map(|item| {
                [&item.get, &item.put, &item.post, &item.delete, &item.patch, &item.head, &item.options, &item.trace]
                    .iter()
                    .filter(|operation| operation.is_some())
                    .count()
            })
            .sum();
        assert_eq!(operations, handlers, "one described operation per routed handler");
        let mut ids = std::collections::BTreeSet::new();
        for item in doc.paths.paths.values() {
            for operation in [&item.get, &item.put, &item.post, &item.delete, &item.patch].into_iter().flatten() {
                let id = operation.operation_id.clone().expect("every operation has an id");
                assert!(ids.insert(id.clone()), "operation ids are unique: {id}");
            }
        }
    }
}
