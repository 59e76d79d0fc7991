//! Group chats: CRUD, members (the owner's own characters, by id), messages (each user message
//! starts a server-side turn loop job), history.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::Response,
};
use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::{CharacterId, GroupId, JobId, MessageId},
    jobs::{JobKind, JobStatus},
    store::Submitted,
    store::{
        self,
        groups::{GroupMessageRecord, GroupRecord, NewGroupMessage},
        jobs::NewJob,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{
    characters::enqueue,
    include_prompt,
    jobs::JobLinks,
    messages::{MAX_MESSAGE_CHARS, MessageHistoryQuery},
    page_limit, parse_id, with_location,
};
use crate::{
    error::ApiError,
    extract::{ApiJson, AuthUser},
    idempotency::Idempotency,
    state::AppState,
};

const MAX_NAME_CHARS: usize = 64;
/// Members per group: every round's prompts carry the other members' briefs.
const MAX_MEMBERS: usize = 12;

fn validate_name(name: &str) -> Result<String, ApiError> {
    let name: String = unicode_normalization::UnicodeNormalization::nfc(name.trim()).collect();
    let name = name.as_str();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters, without control characters"
        )));
    }
    Ok(name.to_owned())
}

/// A member of a group: one of the owner's characters.
#[derive(Serialize, ToSchema)]
pub struct GroupMember {
    character_id: CharacterId,
    name: String,
    brief: Option<String>,
    /// `generating`, `ready` or `failed`.
    status: String,
}

/// A group as clients see it.
#[derive(Serialize, ToSchema)]
pub struct GroupView {
    id: GroupId,
    name: String,
    members: Vec<GroupMember>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// `{group}`: a group with its members.
#[derive(Serialize, ToSchema)]
pub struct GroupEnvelope {
    group: GroupView,
}

/// Your groups, newest first.
#[derive(Serialize, ToSchema)]
pub struct GroupList {
    items: Vec<GroupView>,
}

async fn group_view(state: &AppState, group: GroupRecord) -> Result<GroupView, ApiError> {
    let members: Vec<GroupMember> = state
        .store
        .group_members(group.group_id)
        .await?
        .into_iter()
        .map(|m| GroupMember { character_id: m.character_id, name: m.name, brief: m.brief, status: m.status })
        .collect();
    Ok(GroupView {
        id: group.group_id,
        name: group.name,
        members,
        created_at: group.created_at,
        updated_at: group.updated_at,
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// 1 to 64 characters (after trimming; NFC), no control characters.
    name: String,
    /// 1 to 12 of your characters (a repeated id counts once as a member, twice toward the 12).
    #[schema(min_items = 1, max_items = 12)]
    character_ids: Vec<CharacterId>,
}

/// Every id must be one of the user's characters; otherwise 422 and nothing is created (another
/// user's character is reported exactly like a missing one).
async fn check_owned(
    state: &AppState,
    user_id: fastnpc_shared::ids::UserId,
    ids: &[CharacterId],
) -> Result<(), ApiError> {
    let mut unique = ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    if state.store.count_owned_characters(user_id, &unique).await? != unique.len() as i64 {
        return Err(ApiError::invalid_field("character_ids: every member must be one of your characters"));
    }
    Ok(())
}

/// `POST /v1/groups` with `{name, character_ids}` → `201 {group}`.
#[utoipa::path(
    post,
    path = "/v1/groups",
    operation_id = "create_group",
    tag = "groups",
    summary = "Create a group of your characters",
    request_body = CreateGroup,
    responses(
        (status = 201, description = "Created", body = GroupEnvelope,
            headers(("Location" = String, description = "The group's URL"))),
        (status = 429, description = "Too many groups for this user (`Retry-After`)", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    ApiJson(body): ApiJson<CreateGroup>,
) -> Result<Response, ApiError> {
    let name = validate_name(&body.name)?;
    if body.character_ids.is_empty() || body.character_ids.len() > MAX_MEMBERS {
        return Err(ApiError::invalid_field(format!("character_ids: 1 to {MAX_MEMBERS} characters")));
    }
    check_owned(&state, user_id, &body.character_ids).await?;
    let group_id = GroupId::new();
    let quota = crate::limits::quota(&state);
    if let Submitted::OverQuota(cap) =
        state.store.create_group(group_id, user_id, &name, &body.character_ids, &quota).await?
    {
        return Err(crate::limits::over_quota(&state, cap));
    }
    let group = state.store.group(user_id, group_id).await?.ok_or(ApiError::NotFound)?;
    let body = GroupEnvelope { group: group_view(&state, group).await? };
    Ok(with_location(StatusCode::CREATED, &body, &format!("/v1/groups/{group_id}")))
}

/// `GET /v1/groups` → `{items}`, newest first.
#[utoipa::path(
    get,
    path = "/v1/groups",
    operation_id = "list_groups",
    tag = "groups",
    summary = "List your groups, newest first (all of them)",
    responses((status = 200, description = "Your groups", body = GroupList)),
)]
pub async fn list(State(state): State<AppState>, AuthUser(user_id): AuthUser) -> Result<Json<GroupList>, ApiError> {
    let mut items = Vec::new();
    for group in state.store.list_groups(user_id).await? {
        items.push(group_view(&state, group).await?);
    }
    Ok(Json(GroupList { items }))
}

async fn owned_group(
    state: &AppState,
    user_id: fastnpc_shared::ids::UserId,
    id: &str,
) -> Result<GroupRecord, ApiError> {
    let group_id: GroupId = parse_id(id)?;
    state.store.group(user_id, group_id).await?.ok_or(ApiError::NotFound)
}

/// `GET /v1/groups/{id}` → `{group}` with its members.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}",
    operation_id = "get_group",
    tag = "groups",
    summary = "A group, with its members",
    params(("id" = GroupId, Path, description = "The group")),
    responses((status = 200, description = "The group", body = GroupEnvelope)),
)]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<GroupEnvelope>, ApiError> {
    let group = owned_group(&state, user_id, &id).await?;
    Ok(Json(GroupEnvelope { group: group_view(&state, group).await? }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchGroup {
    /// 1 to 64 characters (after trimming; NFC), no control characters.
    name: String,
}

/// `PATCH /v1/groups/{id}` with `{name}` → `{group}`.
#[utoipa::path(
    patch,
    path = "/v1/groups/{id}",
    operation_id = "rename_group",
    tag = "groups",
    summary = "Rename a group",
    params(("id" = GroupId, Path, description = "The group")),
    request_body = PatchGroup,
    responses((status = 200, description = "The renamed group", body = GroupEnvelope)),
)]
pub async fn patch(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchGroup>,
) -> Result<Json<GroupEnvelope>, ApiError> {
    let name = validate_name(&body.name)?;
    let group = owned_group(&state, user_id, &id).await?;
    state.store.rename_group(user_id, group.group_id, &name).await?;
    get(State(state), AuthUser(user_id), Path(id)).await
}

/// `DELETE /v1/groups/{id}` → `204` (messages and turn jobs go with it; characters stay).
#[utoipa::path(
    delete,
    path = "/v1/groups/{id}",
    operation_id = "delete_group",
    tag = "groups",
    summary = "Delete a group, its messages and turn jobs (the characters stay)",
    params(("id" = GroupId, Path, description = "The group")),
    responses((status = 204, description = "Deleted")),
)]
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let group = owned_group(&state, user_id, &id).await?;
    state.store.delete_group(user_id, group.group_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddGroupMember {
    /// One of your characters.
    character_id: CharacterId,
}

/// `POST /v1/groups/{id}/members` with `{character_id}` → `{group}`.
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/members",
    operation_id = "add_group_member",
    tag = "groups",
    summary = "Add one of your characters to a group",
    description = "Adding a member already in the group changes nothing (still `200`), unless the group is full.",
    params(("id" = GroupId, Path, description = "The group")),
    request_body = AddGroupMember,
    responses(
        (status = 200, description = "The group with its members", body = GroupEnvelope),
        (status = 409, description = "`/problems/group-full`: the group has 12 members", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
    ),
)]
pub async fn add_member(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AddGroupMember>,
) -> Result<Json<GroupEnvelope>, ApiError> {
    let group = owned_group(&state, user_id, &id).await?;
    check_owned(&state, user_id, &[body.character_id]).await?;
    if state.store.group_members(group.group_id).await?.len() >= MAX_MEMBERS {
        return Err(ApiError::Conflict {
            code: "group-full",
            detail: format!("a group has at most {MAX_MEMBERS} members"),
        });
    }
    state.store.add_group_members(user_id, group.group_id, &[body.character_id]).await?;
    get(State(state), AuthUser(user_id), Path(id)).await
}

/// `DELETE /v1/groups/{id}/members/{character_id}` → `204`.
#[utoipa::path(
    delete,
    path = "/v1/groups/{id}/members/{character_id}",
    operation_id = "remove_group_member",
    tag = "groups",
    summary = "Remove a member from a group (the character stays)",
    params(
        ("id" = GroupId, Path, description = "The group"),
        ("character_id" = CharacterId, Path, description = "The member (`404` when not a member)"),
    ),
    responses((status = 204, description = "Removed")),
)]
pub async fn remove_member(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path((id, character)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let group = owned_group(&state, user_id, &id).await?;
    let character_id: CharacterId = parse_id(&character)?;
    if state.store.remove_group_member(user_id, group.group_id, character_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendGroupMessage {
    /// 1 to 8000 characters (after trimming).
    content: String,
}

/// The user's message as stored, as a `202` names it.
#[derive(Serialize, ToSchema)]
pub struct GroupUserMessage {
    id: MessageId,
    /// Always `user`.
    author: &'static str,
    /// The user's username.
    speaker_name: String,
    content: String,
    /// Always false for a user's message.
    truncated: bool,
}

/// The user's message and the turn job it started.
#[derive(Serialize, ToSchema)]
pub struct GroupMessageAccepted {
    message: GroupUserMessage,
    job: JobLinks,
}

/// `POST /v1/groups/{id}/messages` with `{content}` → `202 {message, job}`: stores the user's
/// message and starts a turn loop; a loop still running is interrupted (see the worker's
/// `group_turn`).
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/messages",
    operation_id = "send_group_message",
    tag = "groups",
    summary = "Send a message to a group (a turn job)",
    description = "Stores the message and starts a turn loop: up to your `max_group_rounds` rounds in which \
        the moderator picks who speaks and that character replies (the job's `speaker`, `token` and \
        `message` events). A loop still running for this group is interrupted.",
    params(("id" = GroupId, Path, description = "The group"), crate::openapi::IdempotencyKey),
    request_body = SendGroupMessage,
    responses(
        (status = 202, description = "Accepted: the message and its turn job", body = GroupMessageAccepted,
            headers(("Location" = String, description = "The turn job's URL"))),
        (status = 429, description = "Too many jobs submitted, running, or queued for this user, or the daily \
            token budget is spent (`Retry-After`)", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
    ),
)]
pub async fn send(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<SendGroupMessage>,
) -> Result<Response, ApiError> {
    let content = body.content.trim();
    if content.is_empty() || content.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::invalid_field(format!("content must be 1 to {MAX_MESSAGE_CHARS} characters")));
    }
    let group = owned_group(&state, user_id, &id).await?;
    let idempotency = Idempotency::from_request(
        &headers,
        &json!({"group_message": {"group_id": group.group_id, "content": content}}),
    )?;
    if let Some(idempotency) = &idempotency
        && let Some(job) = idempotency.original(&state, user_id).await?
    {
        return replay(&state, group.group_id, job).await;
    }
    crate::limits::admit_job(&state, user_id).await?;
    let user = state.store.user(user_id).await?.ok_or(ApiError::NotFound)?;
    let message_id = MessageId::new();
    let job_id = JobId::new();
    let message = NewGroupMessage {
        message_id,
        group_id: group.group_id,
        user_id,
        character_id: None,
        speaker_name: &user.username,
        content,
        moderator: None,
        prompt_snapshot: None,
        job_round: None,
        truncated: false,
        prompt_version: None,
    };
    let job = NewJob {
        job_id,
        user_id,
        kind: JobKind::GroupTurn,
        character_id: None,
        message_id: None,
        group_id: Some(group.group_id),
        serial_key: Some(store::jobs::serial::group(group.group_id)),
        progress_total: user.max_group_rounds,
        idempotency: idempotency.as_ref().map(Idempotency::for_new_job),
        params: None,
    };
    if !crate::limits::created(
        &state,
        state.store.submit_group_message(message, job, &crate::limits::quota(&state)).await?,
    )? {
        let winner = Idempotency::winner(idempotency.as_ref(), &state, user_id).await?;
        return replay(&state, group.group_id, winner).await;
    }
    state.background.spawn(enqueue(state.clone(), job_id, JobKind::GroupTurn));
    let message = GroupUserMessage {
        id: message_id,
        author: "user",
        speaker_name: user.username,
        content: content.to_owned(),
        truncated: false,
    };
    Ok(accepted(message, job_id, JobStatus::Queued))
}

fn accepted(message: GroupUserMessage, job_id: JobId, status: JobStatus) -> Response {
    let body = GroupMessageAccepted { message, job: JobLinks::new(job_id, status) };
    with_location(StatusCode::ACCEPTED, &body, &format!("/v1/jobs/{job_id}"))
}

/// The original answer for a repeated request.
async fn replay(state: &AppState, group_id: GroupId, job: store::jobs::JobRecord) -> Result<Response, ApiError> {
    let message = state.store.group_message_of_turn(group_id, job.job_id).await?.ok_or(ApiError::NotFound)?;
    let message = GroupUserMessage {
        id: message.message_id,
        author: "user",
        speaker_name: message.speaker_name,
        content: message.content,
        truncated: message.truncated,
    };
    Ok(accepted(message, job.job_id, job.status))
}

/// A group message as clients see it: the user's, or a character's reply.
#[derive(Serialize, ToSchema)]
pub struct GroupMessageView {
    id: MessageId,
    /// `user` or `character`.
    author: String,
    /// For a character's reply: the speaker.
    character_id: Option<CharacterId>,
    /// The user's username or the character's name.
    speaker_name: String,
    content: String,
    /// The moderator decision that gave this character the turn: `{next_speaker, reason,
    /// confidence, decision}`.
    #[schema(value_type = Option<Object>)]
    moderator: Option<Value>,
    /// For a character's reply: the turn job that produced it.
    job_id: Option<JobId>,
    /// For a character's reply: its round in the turn loop (1, 2, …).
    round: Option<i32>,
    /// A character's reply the model stopped at its output limit.
    truncated: bool,
    /// The prompt set a character's reply was written with (absent for user messages and older
    /// replies).
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_version: Option<String>,
    created_at: DateTime<Utc>,
    /// The system prompt a character's reply was written with (only with `?include=prompt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<String>,
}

/// One page of a group's conversation, newest first.
#[derive(Serialize, ToSchema)]
pub struct GroupMessagePage {
    items: Vec<GroupMessageView>,
    /// Pass as `before` for the next page; null on the last one.
    next_before: Option<MessageId>,
}

/// `GET /v1/groups/{id}/messages?before=&limit=&include=prompt` → `{items, next_before}`, newest
/// first.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}/messages",
    operation_id = "group_history",
    tag = "groups",
    summary = "A group's history, newest first",
    params(("id" = GroupId, Path, description = "The group"), MessageHistoryQuery),
    responses(
        (status = 200, description = "One page", body = GroupMessagePage),
        (status = 422, description = "`limit` is not 1 to 200, or `include` is not `prompt`",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn history(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    query: Result<Query<MessageHistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<GroupMessagePage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let include_prompt = include_prompt(query.include.as_deref())?;
    let limit = page_limit(query.limit)?;
    let group = owned_group(&state, user_id, &id).await?;
    let items = state.store.group_history(group.group_id, query.before, limit).await?;
    let next_before = super::next_cursor(&items, limit, |m| m.message_id);
    let items: Vec<GroupMessageView> = items
        .into_iter()
        .map(|m: GroupMessageRecord| GroupMessageView {
            id: m.message_id,
            author: m.author,
            character_id: m.character_id,
            speaker_name: m.speaker_name,
            content: m.content,
            moderator: m.moderator,
            job_id: m.job_id,
            round: m.round,
            truncated: m.truncated,
            prompt_version: m.prompt_version,
            created_at: m.created_at,
            prompt: if include_prompt { m.prompt_snapshot } else { None },
        })
        .collect();
    Ok(Json(GroupMessagePage { items, next_before }))
}
