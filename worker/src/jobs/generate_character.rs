//! Character generation: nine category calls and the brief, all at once, after the source's
//! document is fetched when the source is not pasted text (`super::source_document`).
//!
//! The original made the nine category calls concurrently and then a tenth, sequential call for
//! the brief, written from the nine results. Here the brief is written from the same source in
//! parallel with the categories, so the wall time is one LLM round-trip, not two (the source
//! holds every fact the categories were drawn from). All ten calls share the process-wide LLM
//! concurrency bound.
//!
//! A category's reply is read tolerantly (see `CategorySpec::parse_reply`); one that still is
//! not a complete category goes back to the model with what is wrong (up to [`PARSE_ATTEMPTS`]
//! replies); if it still fails the job fails with the category named, rather than storing an
//! empty `{}` as the original did.

use std::sync::atomic::{AtomicU32, Ordering};

use fastnpc_shared::{
    domain::{CATEGORIES, CategorySpec, CharacterSource, Profile, profile::SOURCE_CATEGORY, prompt_document},
    events::EventPayload,
    jobs::JobError,
    llm::{self, ChatRequest, JsonSchema, Message, Purpose},
    prompts::PromptSet,
    store::{characters::CharacterRecord, jobs::Claim},
};
use futures::{StreamExt, TryFutureExt, stream::FuturesUnordered};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::{JobFailure, source_document::source_document};
use crate::{Deps, runner::emit};

/// Asks per category before giving up on a reply that does not parse.
pub const PARSE_ATTEMPTS: u32 = 3;

/// Runs the job; returns the result clients see (`{character_id, name, status}`).
pub async fn run(deps: &Deps, claim: &Claim, cancel: &CancellationToken) -> Result<Value, JobFailure> {
    let Some(character_id) = claim.character_id else {
        return Err(JobFailure::Failed(JobError::new("invalid_job", "the job has no character")));
    };
    let Some(character) = deps.store.character_by_id(character_id).await? else {
        return Err(JobFailure::Failed(JobError::new("character_deleted", "the character was deleted")));
    };
    let prompts = character.prompts();
    let total = CATEGORIES.len() as u32;
    let SourceText { text, url: source_url } = source_text(deps, claim, &character, total, cancel).await?;
    let markdown = prompt_document(&character.name, &text);

    let brief = write_brief(deps, prompts, &character.name, &markdown).map_err(JobFailure::from);
    let steps = Steps::new(deps, claim, total);
    let categories = write_categories(deps, prompts, &CATEGORIES, &character.name, &markdown, &steps);
    // Dropping this future (cancellation, a failed category) drops every in-flight request.
    let (mut profile, brief) = tokio::select! {
        joined = futures::future::try_join(categories, brief) => joined?,
        () = cancel.cancelled() => return Err(JobFailure::LostClaim),
    };
    patch_source_facts(&mut profile, &source_url, text.chars().count(), prompts);

    let profile = Value::Object(profile);
    let result = json!({
        "character_id": character_id,
        "name": character.name,
        "status": "ready",
        "prompt_version": prompts.version(),
    });
    let version = Some(prompts.version());
    if !deps.store.finish_generation(claim, character_id, &profile, brief.trim(), version, &result).await? {
        return Err(JobFailure::LostClaim);
    }
    Ok(result)
}

/// The text a character's profile is written from, and the address it was fetched from (empty
/// for pasted text): what the profile's `source` category states as facts.
pub(crate) struct SourceText {
    pub text: String,
    pub url: String,
}

/// The character's source text: pasted, or its document (fetched once, then kept with it).
pub(crate) async fn source_text(
    deps: &Deps,
    claim: &Claim,
    character: &CharacterRecord,
    total: u32,
    cancel: &CancellationToken,
) -> Result<SourceText, JobFailure> {
    let source: CharacterSource = serde_json::from_value(character.source.clone())
        .map_err(|error| JobFailure::Failed(JobError::new("invalid_source", error.to_string())))?;
    Ok(match source.pasted_text() {
        Some(text) => SourceText { text: text.to_owned(), url: String::new() },
        None => {
            let snapshot = source_document(deps, claim, character, &source, total, cancel).await?;
            SourceText { text: snapshot.markdown, url: snapshot.url }
        }
    })
}

/// A job's progress, one step per part written: each is announced on the event stream, and the
/// lease's heartbeat carries the count to the job row.
pub(crate) struct Steps<'a> {
    deps: &'a Deps,
    claim: &'a Claim,
    total: u32,
    done: AtomicU32,
}

impl<'a> Steps<'a> {
    pub(crate) fn new(deps: &'a Deps, claim: &'a Claim, total: u32) -> Self {
        Self { deps, claim, total, done: AtomicU32::new(0) }
    }

    /// `step` is done.
    pub(crate) async fn done(&self, step: &str) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.claim.progress.advance(done as i32);
        let progress = EventPayload::Progress { done, total: self.total, step: step.to_owned() };
        emit(self.deps, self.claim.job_id, progress).await;
    }
}

/// `categories`, written all at once (see [`generate_category`]), each a step of `steps` when
/// it is done. Dropping the future drops every request still in flight.
pub(crate) async fn write_categories(
    deps: &Deps,
    prompts: &dyn PromptSet,
    categories: impl IntoIterator<Item = &'static CategorySpec>,
    name: &str,
    markdown: &str,
    steps: &Steps<'_>,
) -> Result<Profile, JobFailure> {
    let mut pending: FuturesUnordered<_> =
        categories.into_iter().map(|category| generate_category(deps, prompts, category, name, markdown)).collect();
    let mut profile = Profile::new();
    while let Some(finished) = pending.next().await {
        let (category, fields) = finished?;
        profile.insert(category.key.to_owned(), Value::Object(fields));
        steps.done(category.key).await;
    }
    Ok(profile)
}

/// One category: ask, parse strictly, ask again when the reply does not parse.
pub(crate) async fn generate_category(
    deps: &Deps,
    prompts: &dyn PromptSet,
    category: &'static CategorySpec,
    name: &str,
    markdown: &str,
) -> Result<(&'static CategorySpec, Map<String, Value>), JobFailure> {
    let request = ChatRequest {
        messages: vec![
            Message::system(prompts.profile_system()),
            Message::user(prompts.profile_category(category, name, markdown)),
        ],
        json_schema: Some(JsonSchema {
            name: format!("fastnpc_{}", category.key),
            schema: category.json_schema(prompts.language()),
        }),
        purpose: Purpose::ProfileCategory,
        ..Default::default()
    };
    let fields = llm::ask_structured(deps.llm.as_ref(), request, PARSE_ATTEMPTS, |reply| {
        category.parse_reply(reply).map_err(|e| e.to_string())
    })
    .await?
    .map_err(|reason| super::malformed(&format!("category {}", category.key), PARSE_ATTEMPTS, &reason))?;
    Ok((category, fields))
}

pub(crate) async fn write_brief(
    deps: &Deps,
    prompts: &dyn PromptSet,
    name: &str,
    markdown: &str,
) -> Result<String, fastnpc_shared::llm::LlmError> {
    let request = ChatRequest {
        messages: vec![Message::system(prompts.brief_system()), Message::user(prompts.brief(name, markdown))],
        purpose: Purpose::Brief,
        ..Default::default()
    };
    Ok(deps.llm.complete(request).await?.text)
}

/// The source category's address and size are facts we know; the model only guesses them.
pub(crate) fn patch_source_facts(profile: &mut Profile, url: &str, chars: usize, prompts: &dyn PromptSet) {
    if let Some(Value::Object(facts)) = profile.get_mut(SOURCE_CATEGORY) {
        facts.insert("source_url".into(), Value::String(url.to_owned()));
        facts.insert("source_size".into(), Value::String(prompts.source_size(chars)));
    }
}
