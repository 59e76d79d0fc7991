//! The API's OpenAPI 3.1 description, served at `/v1/openapi.json`, with Swagger UI at `/docs`.
//!
//! The description is generated from the code (utoipa): each handler carries its operation
//! (`#[utoipa::path]`), each request and response body derives its schema, and the router is
//! built from the same `routes!` list as the description (`routes::router`), so a route cannot
//! exist without being described, nor be described without existing.
//!
//! What every operation can answer by construction is added here rather than repeated on each
//! handler ([`CommonProblems`]): every route may time out or find a dependency down (503) or
//! fail (500); an authenticated one may answer 401; one with a path id 404 (unknown and someone
//! else's are the same answer); one with a body 400/413/415/422; one with a query 400/422.
//! Handlers list only the problems of their own (409, 429, 502, …).

use std::sync::Arc;

use axum::{
    Extension,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::{
        self, ContentBuilder, RefOr, ResponseBuilder,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

/// The security schemes: a bearer token (a session from `POST /v1/auth/login`, or an API key,
/// `fnpk_…`), or the web app's session cookie.
pub const BEARER: &str = "bearer";
pub const SESSION_COOKIE: &str = "session_cookie";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "FastNPC",
        description = "Turns encyclopedia knowledge into role-play characters. Slow work (generating a \
            character, a chat reply, a group's turns) is a job: the request answers `202` with the job, \
            whose progress and streamed text are read as Server-Sent Events (`GET /v1/jobs/{id}/events`) \
            or by polling `GET /v1/jobs/{id}`. Errors are RFC 9457 problem documents \
            (`application/problem+json`).",
        license(name = "MIT OR Apache-2.0"),
    ),
    modifiers(&SecuritySchemes),
    components(schemas(Problem, fastnpc_shared::events::EventPayload)),
    tags(
        (name = "auth", description = "Accounts, sessions and API keys"),
        (name = "characters", description = "Characters and their generation"),
        (name = "chat", description = "One-to-one chat and a character's memory"),
        (name = "avatars", description = "Pictures of characters and users"),
        (name = "groups", description = "Group chats run by a moderator"),
        (name = "jobs", description = "Jobs: status, event stream, cancel, retry"),
        (name = "sources", description = "Encyclopedia search"),
        (name = "admin", description = "Administration (admins only)"),
        (name = "system", description = "Deployment facts, health probes and this description"),
    ),
)]
pub struct ApiDoc;

/// An RFC 9457 problem document: every error answer of the API.
#[derive(ToSchema)]
#[allow(dead_code)] // A schema only: `ApiError` renders the same fields.
pub struct Problem {
    /// `/problems/<code>`: the machine-readable kind (`not-found`, `invalid-field`, …).
    #[schema(example = "/problems/invalid-field")]
    r#type: String,
    title: String,
    status: u16,
    /// What is wrong, naming the field or limit.
    detail: String,
    /// For `/problems/ambiguous-source` only: the entries the title names.
    candidates: Option<Vec<fastnpc_shared::sources::Candidate>>,
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A session token from `POST /v1/auth/login`, or an API key (`fnpk_…`) from \
                         `POST /v1/api-keys`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::browser_session::SESSION_COOKIE,
                "The web app's session (`POST /v1/auth/login` with `\"cookie\": true`; `__Host-fastnpc_session` \
                 over HTTPS). State-changing requests must come from this site's pages (`Sec-Fetch-Site` / \
                 `Origin`), or they answer 403.",
            ))),
        );
        doc.security =
            Some(vec![SecurityRequirement::new(BEARER, [""; 0]), SecurityRequirement::new(SESSION_COOKIE, [""; 0])]);
    }
}

/// Completes the description once every route is in it: the problem answers each operation has
/// by construction (see the module's docs). Modifiers given to `#[openapi]` run before the
/// router adds its paths, so this one is applied by [`crate::routes::router`].
pub fn complete(doc: &mut openapi::OpenApi) {
    CommonProblems.modify(doc);
}

/// The paths whose answer can be a job's event stream: its `GET`, and the `POST` of a chat
/// message that asks for one.
const EVENTS_PATH: &str = "/v1/jobs/{id}/events";
const SEND_MESSAGE_PATH: &str = "/v1/characters/{id}/messages";

/// The event stream's schema, `JobStreamEvent` (added to the served JSON: utoipa's schema model
/// has no `contentSchema`): one SSE event as a client parses it (and as
/// OpenAPI 3.2's `itemSchema` and schemathesis read a `text/event-stream` schema) —
/// `{event, id, data}`, where `data` is JSON text whose schema depends on `event`. It is built
/// from `EventPayload`'s variants (`{type, data}`, the serde form of the same enum), so the two
/// cannot drift.
fn describe_event_stream(doc: &mut serde_json::Value) {
    use serde_json::json;
    let schemas = &mut doc["components"]["schemas"];
    let variants = schemas["EventPayload"]["oneOf"].as_array().cloned().unwrap_or_default();
    let events: Vec<serde_json::Value> = variants
        .iter()
        .map(|variant| {
            json!({
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": variant["properties"]["type"],
                    "id": {
                        "type": "string",
                        "pattern": "^[0-9]+$",
                        "description": "The event's place in the job's log: 1, 2, 3, … Absent on a terminal event the \
                                        stream read from the job's row because the log had none (expired, or a cursor \
                                        past its end)",
                    },
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": variant["properties"]["data"],
                    },
                },
            })
        })
        .collect();
    assert!(!events.is_empty(), "EventPayload has its variants");
    schemas["JobStreamEvent"] = json!({
        "description": "One event of a job's stream (`event:`, `id:`, `data:` lines); `data` is the JSON of the \
                        event's payload",
        "oneOf": events,
    });
    for (path, method) in [(EVENTS_PATH, "get"), (SEND_MESSAGE_PATH, "post")] {
        let stream = &mut doc["paths"][path][method]["responses"]["200"]["content"]["text/event-stream"];
        assert!(stream.is_object(), "{method} {path} answers an event stream");
        stream["schema"] = json!({"$ref": "#/components/schemas/JobStreamEvent"});
    }
}

struct CommonProblems;

impl Modify for CommonProblems {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        for item in doc.paths.paths.values_mut() {
            let item_params = item.parameters.clone().unwrap_or_default();
            for (method, operation) in operations(item) {
                let params: Vec<_> = item_params.iter().chain(operation.parameters.iter().flatten()).collect();
                let has = |location: openapi::path::ParameterIn| {
                    params.iter().any(|p| matches!(p, RefOr::T(p) if p.parameter_in == location))
                };
                let mut add = |status: &str, description: &str| {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| RefOr::T(problem_response(description)));
                };
                add("500", "An unexpected error (logged; the detail is generic)");
                add("503", "A backing service is down, the server is busy, or the request timed out (`Retry-After`)");
                // Public operations say `security: [{}]`; the rest inherit the document's schemes.
                let public = operation.security.as_ref().is_some_and(|s| s.iter().all(is_empty_requirement));
                if !public {
                    add("401", "No credentials, or a token that is invalid, expired or revoked");
                    if method != "get" {
                        add("403", "A cookie-authenticated change that did not come from this site's pages");
                    }
                }
                if has(openapi::path::ParameterIn::Path) {
                    add("404", "No such resource, or one of another user (the same answer)");
                }
                if has(openapi::path::ParameterIn::Query) {
                    add("400", "A malformed query (an unknown parameter, a value of the wrong type)");
                    add("422", "A query value out of its range (named in the detail)");
                }
                if operation.request_body.is_some() {
                    add("400", "Malformed JSON");
                    add("413", "The body is larger than 1 MiB");
                    add("415", "The body is not `application/json`");
                    add("422", "Well-formed JSON with a missing, unknown or unacceptable field (named in the detail)");
                }
            }
        }
    }
}

fn operations(item: &mut openapi::PathItem) -> impl Iterator<Item = (&'static str, &mut openapi::path::Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.map(|operation| (method, operation)))
}

fn is_empty_requirement(requirement: &SecurityRequirement) -> bool {
    *requirement == SecurityRequirement::default()
}

fn problem_response(description: &str) -> openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new().schema(Some(RefOr::Ref(openapi::Ref::from_schema_name("Problem")))).build(),
        )
        .build()
}

/// The description, rendered once at start-up.
#[derive(Clone)]
pub struct Document(Arc<str>);

impl Document {
    pub fn new(doc: &openapi::OpenApi) -> Self {
        let mut value = serde_json::to_value(doc).expect("an OpenAPI document always serializes");
        describe_event_stream(&mut value);
        Self(value.to_string().into())
    }
}

/// The OpenAPI 3.1 description of this API.
#[utoipa::path(
    get,
    operation_id = "get_openapi",
    path = "/v1/openapi.json",
    tag = "system",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 description", content_type = "application/json", body = Object)),
)]
pub async fn document(Extension(document): Extension<Document>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], document.0.to_string()).into_response()
}

/// Swagger UI's own content policy for `/docs`: it sets inline styles and shows `data:` images,
/// which the web app's policy refuses; scripts still load only from this origin.
pub const DOCS_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The interactive reference at `/docs` (Swagger UI, compiled in: no CDN), reading
/// `/v1/openapi.json`.
pub fn docs<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    let ui = utoipa_swagger_ui::SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/v1/openapi.json"));
    axum::Router::from(ui).layer(axum::middleware::map_response(|mut response: Response| async move {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCS_CONTENT_SECURITY_POLICY));
        response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        response
    }))
}

/// The `Idempotency-Key` header of job-creating POSTs.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // A description only: `crate::idempotency` reads the header.
pub struct IdempotencyKey {
    /// 1 to 255 visible ASCII characters. A repeat of the same request with the same key, by the
    /// same user, while the original job exists, answers that job instead of creating another;
    /// the same key with a different request is a 422.
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
}
