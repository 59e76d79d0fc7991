//! One character's streamed reply to one user message.
//!
//! The prompt is the original's six parts (`PromptSet::chat_system_prompt`, in the character's
//! language; the set's version is stored with the reply) built from the
//! profile, both memory layers, the user's bio and the session layer (the uncompressed messages
//! *before* the one answered); the message itself is the user turn. Replies of one conversation
//! run one at a time in the order the messages were sent (serial key `chat:<character>`), so a
//! second message's prompt contains the first reply.
//!
//! The first text delta goes out at once; later deltas are coalesced into `token` events (at
//! most one per [`FLUSH_EVERY`] or per [`FLUSH_CHARS`] characters) so a fast model does not cost
//! one Redis write and one SSE frame per token. If the model's stream breaks after text was shown, a `reset` event voids it and the
//! reply starts over; the concatenated tokens after the last `reset` equal the stored reply.

use std::{sync::Arc, time::Duration};

use fastnpc_shared::{
    events::EventPayload,
    ids::{CharacterId, JobId, MessageId},
    jobs::JobError,
    llm::{ChatRequest, FinishReason, LlmError, LlmErrorKind, Message, Purpose, StreamEvent},
    prompts::ChatPrompt,
    store::{self, jobs::Claim},
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::JobFailure;
use crate::{Deps, runner::emit};

/// Longest wait before buffered text goes out as a `token` event.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Buffered characters that go out at once, whatever the time.
pub const FLUSH_CHARS: usize = 48;
/// How often a broken stream is started over before the job fails.
const STREAM_RESTARTS: u32 = 2;

pub async fn run(deps: &Deps, claim: &Claim, _cancel: &CancellationToken) -> Result<Value, JobFailure> {
    let (Some(character_id), Some(message_id)) = (claim.character_id, claim.message_id) else {
        return Err(JobFailure::Failed(JobError::new("invalid_job", "the job has no message to answer")));
    };
    let gone = || JobFailure::Failed(JobError::new("character_deleted", "the character or message was deleted"));
    // Memory and session from one snapshot: a compression committing in between would otherwise
    // drop its messages from this prompt in both forms. The claim read it when its store can.
    let context = match &claim.chat_context.0 {
        Some(context) => context.clone(),
        None => Arc::new(
            deps.store
                .chat_context(claim.user_id, character_id, message_id, store::messages::CHAT_SESSION_WINDOW)
                .await?
                .ok_or_else(gone)?,
        ),
    };
    let store::ChatContext { character, user, message, memories, transcript } = &*context;
    let prompts = character.prompts();
    let Some(Value::Object(profile)) = &character.profile else {
        return Err(JobFailure::Failed(JobError::new("character_not_ready", "the character has no profile yet")));
    };
    let contents =
        |entries: &[store::memories::MemoryEntry]| entries.iter().map(|e| e.content.clone()).collect::<Vec<_>>();
    let system = prompts.chat_system_prompt(&ChatPrompt {
        character_name: &character.name,
        user_name: &user.username,
        user_bio: &user.bio,
        profile,
        long_term: &contents(&memories.long_term),
        short_term: &contents(&memories.short_term),
        transcript,
        ltm_budget: user.ctx_max_ltm as usize,
        stm_budget: user.ctx_max_stm as usize,
        session_budget: user.ctx_max_chat as usize,
    });
    let request = ChatRequest {
        messages: vec![Message::system(system.clone()), Message::user(message.clone())],
        purpose: Purpose::ChatReply,
        ..Default::default()
    };
    if claim.attempt > 1 {
        // An earlier attempt may have streamed part of a reply it never stored.
        emit(deps, claim.job_id, EventPayload::Reset { reason: "the job was taken over".into() }).await;
    }
    let reply = stream_reply(deps, claim.job_id, request, None).await?;

    let reply = store::messages::NewReply {
        message_id: MessageId::new(),
        user_id: claim.user_id,
        character_id,
        reply_to: message_id,
        content: &reply.text,
        job_id: claim.job_id,
        prompt_snapshot: &system,
        truncated: reply.finish.is_cut(),
        prompt_version: Some(prompts.version()),
        created_at: store::stamp(),
    };
    let result = job_result(&reply);
    let Some(stored) = deps.store.finish_reply(claim, reply, &result).await? else {
        return Err(JobFailure::LostClaim);
    };

    if stored.session_chars > i64::from(user.ctx_max_chat)
        && let Err(error) = super::schedule_compression(deps, claim.user_id, character_id, None).await
    {
        // The next reply schedules it again; memory is late, not lost.
        tracing::warn!(%error, "cannot schedule memory compression");
    }
    Ok(result)
}

/// The job's result: the reply as it is stored, as the API shows a message.
fn job_result(reply: &store::messages::NewReply<'_>) -> Value {
    let mut message = json!({
        "id": reply.message_id,
        "author": "character",
        "content": reply.content,
        "created_at": reply.created_at,
        "job_id": reply.job_id,
        "reply_to": reply.reply_to,
        "truncated": reply.truncated,
    });
    if let Some(version) = reply.prompt_version {
        message["prompt_version"] = json!(version);
    }
    json!({ "message": message })
}

/// A whole streamed reply.
pub(crate) struct StreamedReply {
    pub text: String,
    /// `Length` when the model hit `max_tokens`: the text is cut, and the stored message says so.
    pub finish: FinishReason,
}

/// Streams the reply, emitting coalesced `token` events (tagged with `speaker` in a group);
/// restarts a broken stream (after a `reset` event when text had been shown). Returns the whole
/// reply.
pub(crate) async fn stream_reply(
    deps: &Deps,
    job_id: JobId,
    request: ChatRequest,
    speaker: Option<CharacterId>,
) -> Result<StreamedReply, JobFailure> {
    let mut restarts = 0;
    loop {
        let mut shown = false;
        // Opening the stream is already retried by the client; only a stream that breaks
        // midway is started over here.
        let error = match deps.llm.stream(request.clone()).await {
            Err(error) => return Err(error.into()),
            Ok(mut stream) => {
                let mut reply = String::new();
                let mut pending = String::new();
                // One timer for the reply, moved on at each flush, not one per chunk.
                let flush_timer = tokio::time::sleep_until(Instant::now() + FLUSH_EVERY);
                tokio::pin!(flush_timer);
                loop {
                    let next = tokio::select! {
                        biased;
                        next = stream.next() => Ok(next),
                        () = &mut flush_timer => Err(()),
                    };
                    match next {
                        Ok(Some(Ok(StreamEvent::Text(delta)))) => {
                            reply.push_str(&delta);
                            pending.push_str(&delta);
                            // The first text goes out at once (time to first token is what
                            // users feel); after that, deltas are coalesced.
                            if shown && pending.chars().count() < FLUSH_CHARS {
                                continue;
                            }
                        }
                        Ok(Some(Err(error))) => break error,
                        Ok(Some(Ok(StreamEvent::Finished { finish, .. }))) => {
                            flush(deps, job_id, speaker, &mut pending, &mut shown).await;
                            if reply.trim().is_empty() {
                                break LlmError::new(LlmErrorKind::Malformed, "the model returned an empty reply");
                            }
                            return Ok(StreamedReply { text: reply, finish });
                        }
                        Ok(None) => {
                            break LlmError::new(LlmErrorKind::Unavailable, "the stream ended without finishing");
                        }
                        Err(_flush_time) => {}
                    }
                    flush(deps, job_id, speaker, &mut pending, &mut shown).await;
                    flush_timer.as_mut().reset(Instant::now() + FLUSH_EVERY);
                }
            }
        };
        if !error.kind.is_transient() || restarts >= STREAM_RESTARTS {
            return Err(error.into());
        }
        restarts += 1;
        tracing::warn!(%error, restarts, "reply stream broke; starting it over");
        if shown {
            emit(deps, job_id, EventPayload::Reset { reason: error.message.clone() }).await;
        }
    }
}

async fn flush(deps: &Deps, job_id: JobId, speaker: Option<CharacterId>, pending: &mut String, shown: &mut bool) {
    if pending.is_empty() {
        return;
    }
    emit(deps, job_id, EventPayload::Token { text: std::mem::take(pending), speaker }).await;
    *shown = true;
}
