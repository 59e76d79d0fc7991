//! Regeneration: chosen categories (and/or the brief) of a ready character written again from
//! its stored source, exactly as generation writes them (the same prompts, parsing and retries
//! of a malformed reply), all at once.
//!
//! The character stays `ready` meanwhile: chat goes on with the current profile, and edits are
//! allowed. At the end the regenerated categories replace those of the profile as it is then,
//! whole (an edit made in them, before or during the job, is gone; the version history keeps
//! it), and every other category keeps whatever it holds then. That merge, the new version
//! (`regenerated`, naming the categories and the job) and the job's success are one transaction.

use fastnpc_shared::{
    domain::{CATEGORIES, CategorySpec, prompt_document},
    jobs::{JobError, RegenerationParams},
    store::jobs::Claim,
};
use futures::TryFutureExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{
    JobFailure,
    generate_character::{SourceText, Steps, patch_source_facts, source_text, write_brief, write_categories},
};
use crate::Deps;

/// The progress step of the brief (categories are named by their key).
pub const BRIEF_STEP: &str = "brief";

/// Runs the job; returns `{character_id, version, categories, brief}`.
pub async fn run(deps: &Deps, claim: &Claim, cancel: &CancellationToken) -> Result<Value, JobFailure> {
    let invalid = |message: &str| JobFailure::Failed(JobError::new("invalid_job", message));
    let Some(character_id) = claim.character_id else { return Err(invalid("the job has no character")) };
    let job = deps.store.job(claim.user_id, claim.job_id).await?.ok_or(JobFailure::LostClaim)?;
    let params: RegenerationParams = job
        .params
        .and_then(|params| serde_json::from_value(params).ok())
        .ok_or_else(|| invalid("the job does not say what to regenerate"))?;
    let categories = params
        .categories
        .iter()
        .map(|key| CATEGORIES.iter().find(|category| category.key == key))
        .collect::<Option<Vec<&'static CategorySpec>>>()
        .ok_or_else(|| invalid("the job names a category this worker does not know"))?;
    let Some(character) = deps.store.character_by_id(character_id).await? else {
        return Err(JobFailure::Failed(JobError::new("character_deleted", "the character was deleted")));
    };
    if character.status != "ready" {
        return Err(JobFailure::Failed(JobError::new(
            "character_not_ready",
            format!("the character is {}; only a ready character is regenerated", character.status),
        )));
    }
    let prompts = character.prompts();
    let total = (categories.len() + usize::from(params.brief)) as u32;
    let SourceText { text, url } = source_text(deps, claim, &character, total, cancel).await?;
    let markdown = prompt_document(&character.name, &text);

    let steps = Steps::new(deps, claim, total);
    let brief = async {
        if !params.brief {
            return Ok(None);
        }
        let brief = write_brief(deps, prompts, &character.name, &markdown).map_err(JobFailure::from).await?;
        steps.done(BRIEF_STEP).await;
        Ok::<_, JobFailure>(Some(brief.trim().to_owned()))
    };
    let regenerated = write_categories(deps, prompts, categories, &character.name, &markdown, &steps);
    let (mut regenerated, brief) = tokio::select! {
        joined = futures::future::try_join(regenerated, brief) => joined?,
        () = cancel.cancelled() => return Err(JobFailure::LostClaim),
    };
    patch_source_facts(&mut regenerated, &url, text.chars().count(), prompts);

    let detail = json!({"categories": params.categories, "brief": params.brief, "job_id": claim.job_id});
    let result = |version: i64| {
        json!({
            "character_id": character_id,
            "version": version,
            "categories": params.categories,
            "brief": params.brief,
            "prompt_version": prompts.version(),
        })
    };
    let version = deps
        .store
        .finish_regeneration(claim, character_id, &regenerated, brief.as_deref(), &detail, &result)
        .await?
        .ok_or(JobFailure::LostClaim)?;
    Ok(result(version))
}
