//! A group's turn loop, run on the server (the original ran it in the browser, so only that
//! browser's tab saw the conversation unfold).
//!
//! After a user message, up to the user's `max_group_rounds` rounds of: the moderator picks who
//! speaks (JSON `{next_speaker, reason, confidence}` requested with a schema whose speaker is an
//! enum of the members; a non-member is refused and the moderator asked again), then that
//! character's reply streams as `token` events tagged with its id and is stored with the
//! decision. The original's thresholds apply: confidence ≥ 0.8 keeps the choice, 0.5–0.8 hands
//! the turn to a random member, < 0.5 stops the loop (`waiting`). Between rounds the loop pauses
//! (`FASTNPC_GROUP_TURN_PAUSE_MS`, the original's 3 s) so the user can cut in.
//!
//! **Interruption.** A newer user message in the group starts a new turn job (same serial key,
//! so it waits for this one) and interrupts this one at its next checkpoint: before the moderator,
//! after it, and during the pause. A reply already streaming is completed and stored — it was
//! being said when the user spoke — and then the job ends `cancelled`. The new job then sees the
//! whole transcript, that reply and the user's message included.
//!
//! A redelivered job continues after the rounds it already stored (`group_messages` is unique
//! per job and round).

use std::time::Duration;

use fastnpc_shared::{
    events::EventPayload,
    ids::{GroupId, JobId, MessageId},
    jobs::JobError,
    llm::{self, ChatRequest, JsonSchema, Message, Purpose, reply},
    prompts::{GroupPrompt, Language, PromptSet},
    store::{
        self,
        groups::{GroupMessageRecord, Member, NewGroupMessage},
        jobs::Claim,
    },
};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{JobFailure, chat_reply::stream_reply};
use crate::{Deps, runner::emit};

/// Transcript lines in the reply's system prompt (the original's last 50).
const PROMPT_TRANSCRIPT: i64 = 50;
/// Transcript lines the moderator sees (the original's 20).
const MODERATOR_TRANSCRIPT: usize = 20;
/// Transcript lines in the reply's user turn (the original's 10).
const TURN_LINES: usize = 10;
/// Times the moderator is asked before the loop gives up and waits for the user.
const MODERATOR_ATTEMPTS: u32 = 3;
/// How often the pause checks for an interrupting user message.
const INTERRUPT_POLL: Duration = Duration::from_millis(100);
/// Group memory: a member's unabsorbed messages that trigger a compression (the original's 20).
pub const GROUP_COMPRESSION_MESSAGES: usize = 20;

pub async fn run(deps: &Deps, claim: &Claim, _cancel: &CancellationToken) -> Result<Value, JobFailure> {
    let Some(group_id) = claim.group_id else {
        return Err(JobFailure::Failed(JobError::new("invalid_job", "the job has no group")));
    };
    let gone = || JobFailure::Failed(JobError::new("group_deleted", "the group was deleted"));
    let user = deps.store.user(claim.user_id).await?.ok_or_else(gone)?;
    let members: Vec<Member> = deps
        .store
        .group_members(group_id)
        .await?
        .into_iter()
        .filter(|m| m.status == "ready" && m.profile.is_some())
        .collect();
    if members.is_empty() {
        return Err(JobFailure::Failed(JobError::new("no_members", "the group has no ready characters")));
    }
    let labels = labels(&members);
    let prompts = group_prompts(&members, &user);
    let max_rounds = user.max_group_rounds;
    if claim.attempt > 1 {
        // An earlier attempt may have streamed part of a round it never stored.
        emit(deps, claim.job_id, EventPayload::Reset { reason: "the job was taken over".into() }).await;
    }
    let mut round = deps.store.group_rounds_done(claim.job_id).await?;
    let mut stored = Vec::new();

    let stopped = loop {
        if round >= max_rounds {
            break "max_rounds";
        }
        interruption_check(deps, group_id, claim.job_id, round).await?;
        let transcript = lines(&recent(deps, group_id).await?, &user.username);
        let decision = moderate(deps, prompts, &members, &labels, &transcript).await?;
        let reason = decision.reason().to_owned();
        let Some((speaker, decision)) = decision.into_turn(&members, &labels) else {
            emit(deps, claim.job_id, EventPayload::Waiting { reason: format!("moderator: {reason}") }).await;
            break "moderator";
        };
        interruption_check(deps, group_id, claim.job_id, round).await?;
        emit(
            deps,
            claim.job_id,
            EventPayload::Speaker {
                character_id: speaker.character_id,
                name: speaker.name.clone(),
                reason: decision["reason"].as_str().unwrap_or_default().to_owned(),
                confidence: decision["confidence"].as_f64().unwrap_or_default(),
                decision: decision["decision"].as_str().unwrap_or_default().to_owned(),
            },
        )
        .await;

        let (system, request) = reply_request(deps, prompts, &user, speaker, &members, &transcript).await?;
        let reply = stream_reply(deps, claim.job_id, request, Some(speaker.character_id)).await?;
        let spoken = Spoken {
            text: strip_speaker_prefix(&reply.text, &speaker.name),
            truncated: reply.finish.is_cut(),
            prompt_version: Some(prompts.version()),
        };
        round += 1;
        let message = store_reply(deps, claim, group_id, speaker, &spoken, &decision, &system, round).await?;
        emit(deps, claim.job_id, EventPayload::Message { message: message.clone() }).await;
        stored.push(message);
        if let Err(error) = schedule_compressions(deps, claim, group_id, i64::from(user.ctx_max_chat)).await {
            tracing::warn!(%error, "cannot schedule group memory compression");
        }
        if round < max_rounds {
            pause(deps, group_id, claim.job_id, round).await?;
        }
    };
    if stopped == "max_rounds" {
        emit(deps, claim.job_id, EventPayload::Waiting { reason: "max_rounds".into() }).await;
    }
    let result = json!({"rounds": round, "stopped": stopped, "messages": stored});
    if !deps.store.succeed_job(claim, &result).await? {
        return Err(JobFailure::LostClaim);
    }
    Ok(result)
}

/// Display labels for the moderator: names, made unique when two members share one.
fn labels(members: &[Member]) -> Vec<String> {
    members
        .iter()
        .enumerate()
        .map(|(index, member)| {
            let duplicate = members.iter().filter(|m| m.name == member.name).count() > 1;
            if duplicate { format!("{}#{}", member.name, index + 1) } else { member.name.clone() }
        })
        .collect()
}

async fn recent(deps: &Deps, group_id: GroupId) -> Result<Vec<GroupMessageRecord>, sqlx::Error> {
    let mut newest = deps.store.group_history(group_id, None, PROMPT_TRANSCRIPT).await?;
    newest.reverse();
    Ok(newest)
}

fn lines(messages: &[GroupMessageRecord], user_name: &str) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            let speaker = if m.author == "user" { user_name } else { m.speaker_name.as_str() };
            format!("{speaker}: {}", m.content)
        })
        .collect()
}

fn tail(lines: &[String], count: usize) -> &[String] {
    &lines[lines.len().saturating_sub(count)..]
}

/// Ends the job (cancelled) when the user spoke again: a newer turn job of the group waits.
async fn interruption_check(deps: &Deps, group_id: GroupId, job_id: JobId, rounds: i32) -> Result<(), JobFailure> {
    let serial_key = store::jobs::serial::group(group_id);
    if deps.store.successor_waiting(&serial_key, job_id).await? {
        tracing::info!(rounds, "group turn interrupted by a newer user message");
        return Err(JobFailure::Interrupted(json!({"rounds": rounds, "stopped": "interrupted"})));
    }
    Ok(())
}

/// The pause between rounds, cut short by an interrupting user message.
async fn pause(deps: &Deps, group_id: GroupId, job_id: JobId, rounds: i32) -> Result<(), JobFailure> {
    let until = tokio::time::Instant::now() + deps.config.group_turn_pause;
    loop {
        interruption_check(deps, group_id, job_id, rounds).await?;
        let now = tokio::time::Instant::now();
        if now >= until {
            return Ok(());
        }
        tokio::time::sleep((until - now).min(INTERRUPT_POLL)).await;
    }
}

#[derive(Deserialize)]
struct ModeratorReply {
    next_speaker: String,
    reason: String,
    confidence: f64,
}

/// What the moderator decided, after the original's thresholds.
enum Decision {
    /// Confidence ≥ 0.8: the moderator's choice speaks.
    Chosen { index: usize, reason: String, confidence: f64 },
    /// 0.5 ≤ confidence < 0.8: a random member speaks.
    Random { index: usize, chose: String, reason: String, confidence: f64 },
    /// Confidence < 0.5, or no valid choice: wait for the user.
    Wait { reason: String },
}

impl Decision {
    fn reason(&self) -> &str {
        match self {
            Self::Chosen { reason, .. } | Self::Random { reason, .. } | Self::Wait { reason } => reason,
        }
    }

    /// The speaker and the decision as stored on the message; `None` to wait.
    fn into_turn<'m>(self, members: &'m [Member], labels: &[String]) -> Option<(&'m Member, Value)> {
        match self {
            Self::Chosen { index, reason, confidence } => Some((
                &members[index],
                json!({"next_speaker": labels[index], "reason": reason, "confidence": confidence, "decision": "chosen"}),
            )),
            Self::Random { index, chose, reason, confidence } => Some((
                &members[index],
                json!({"next_speaker": chose, "reason": reason, "confidence": confidence, "decision": "random"}),
            )),
            Self::Wait { .. } => None,
        }
    }
}

/// A group speaks one language: its members' when they share one, else the user's.
fn group_prompts(members: &[Member], user: &store::users::UserRecord) -> &'static dyn PromptSet {
    let first = members.first().map(|m| m.language.as_str());
    let shared = members.iter().all(|m| Some(m.language.as_str()) == first);
    let language = if shared { first.unwrap_or_default() } else { user.language.as_str() };
    language.parse::<Language>().unwrap_or_default().prompts()
}

async fn moderate(
    deps: &Deps,
    prompts: &dyn PromptSet,
    members: &[Member],
    labels: &[String],
    transcript: &[String],
) -> Result<Decision, JobFailure> {
    let participants: Vec<(String, String)> = members
        .iter()
        .zip(labels)
        .map(|(member, label)| (label.clone(), member.brief.clone().unwrap_or_default()))
        .collect();
    let request = ChatRequest {
        messages: vec![
            Message::system(prompts.moderator_system()),
            Message::user(prompts.moderator(&participants, tail(transcript, MODERATOR_TRANSCRIPT))),
        ],
        json_schema: Some(JsonSchema {
            name: "fastnpc_moderator".into(),
            schema: json!({
                "type": "object",
                "properties": {
                    "next_speaker": {"type": "string", "enum": labels},
                    "reason": {"type": "string"},
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                },
                "required": ["next_speaker", "reason", "confidence"],
                "additionalProperties": false,
            }),
        }),
        purpose: Purpose::Moderator,
        ..Default::default()
    };
    let schema = request.json_schema.as_ref().map(|s| s.schema.clone()).unwrap_or_default();
    let chosen = llm::ask_structured(deps.llm.as_ref(), request, MODERATOR_ATTEMPTS, |text| {
        let parsed: ModeratorReply = reply::parse(text, &schema)?;
        if !(0.0..=1.0).contains(&parsed.confidence) {
            return Err(format!("confidence {} is outside 0 to 1", parsed.confidence));
        }
        let index = labels
            .iter()
            .position(|label| *label == parsed.next_speaker.trim())
            .ok_or_else(|| format!("next_speaker must be one of {}", labels.join(", ")))?;
        Ok((index, parsed))
    })
    .await?;
    let Ok((index, ModeratorReply { next_speaker, reason, confidence })) = chosen else {
        return Ok(Decision::Wait { reason: "the moderator did not name a member".into() });
    };
    Ok(if confidence >= 0.8 {
        Decision::Chosen { index, reason, confidence }
    } else if confidence >= 0.5 {
        let index = rand::rng().random_range(0..members.len());
        Decision::Random { index, chose: next_speaker, reason, confidence }
    } else {
        Decision::Wait { reason }
    })
}

async fn reply_request(
    deps: &Deps,
    prompts: &dyn PromptSet,
    user: &store::users::UserRecord,
    speaker: &Member,
    members: &[Member],
    transcript: &[String],
) -> Result<(String, ChatRequest), JobFailure> {
    let memories = deps.store.memories(speaker.character_id).await?;
    let contents =
        |entries: &[store::memories::MemoryEntry]| entries.iter().map(|e| e.content.clone()).collect::<Vec<_>>();
    let others: Vec<(String, String)> = members
        .iter()
        .filter(|m| m.character_id != speaker.character_id)
        .map(|m| (m.name.clone(), m.brief.clone().unwrap_or_default()))
        .collect();
    let empty = serde_json::Map::new();
    let profile = speaker.profile.as_ref().and_then(Value::as_object).unwrap_or(&empty);
    let system = prompts.group_system_prompt(&GroupPrompt {
        character_name: &speaker.name,
        user_name: &user.username,
        user_bio: &user.bio,
        profile,
        long_term: &contents(&memories.long_term),
        short_term: &contents(&memories.short_term),
        others: &others,
        transcript,
    });
    let request = ChatRequest {
        messages: vec![
            Message::system(system.clone()),
            Message::user(prompts.group_user_turn(&speaker.name, tail(transcript, TURN_LINES))),
        ],
        purpose: Purpose::GroupReply,
        ..Default::default()
    };
    Ok((system, request))
}

/// Models often start with "Name:" in a group transcript format; the stored line should not.
fn strip_speaker_prefix(reply: &str, name: &str) -> String {
    let trimmed = reply.trim();
    for separator in [":", "："] {
        if let Some(rest) = trimmed.strip_prefix(name).and_then(|r| r.trim_start().strip_prefix(separator)) {
            return rest.trim().to_owned();
        }
    }
    trimmed.to_owned()
}

/// A member's reply as it is stored.
struct Spoken {
    /// Without the speaker prefix models like to add.
    text: String,
    /// The model stopped at its output limit.
    truncated: bool,
    prompt_version: Option<&'static str>,
}

#[expect(clippy::too_many_arguments, reason = "one row's fields")]
async fn store_reply(
    deps: &Deps,
    claim: &Claim,
    group_id: GroupId,
    speaker: &Member,
    reply: &Spoken,
    decision: &Value,
    system: &str,
    round: i32,
) -> Result<Value, JobFailure> {
    let message_id = MessageId::new();
    let message = NewGroupMessage {
        message_id,
        group_id,
        user_id: claim.user_id,
        character_id: Some(speaker.character_id),
        speaker_name: &speaker.name,
        content: &reply.text,
        moderator: Some(decision),
        prompt_snapshot: Some(system),
        job_round: Some((claim.job_id, round)),
        truncated: reply.truncated,
        prompt_version: reply.prompt_version,
    };
    if !deps.store.store_group_reply(claim, message, round).await? {
        return Err(JobFailure::LostClaim);
    }
    let mut message = json!({
        "id": message_id,
        "author": "character",
        "character_id": speaker.character_id,
        "speaker_name": speaker.name,
        "content": reply.text,
        "moderator": decision,
        "round": round,
        "truncated": reply.truncated,
    });
    if let Some(version) = reply.prompt_version {
        message["prompt_version"] = json!(version);
    }
    Ok(message)
}

/// Schedules a group-memory compression for each member whose unabsorbed part of the transcript
/// grew past the original's trigger (≥ 20 messages holding at least half the session budget).
async fn schedule_compressions(
    deps: &Deps,
    claim: &Claim,
    group_id: GroupId,
    session_budget: i64,
) -> Result<(), sqlx::Error> {
    for member in deps.store.group_members(group_id).await? {
        if !needs_compression(deps, group_id, member.absorbed_upto, session_budget).await? {
            continue;
        }
        super::schedule_compression(deps, claim.user_id, member.character_id, Some(group_id)).await?;
    }
    Ok(())
}

/// True when a member's unabsorbed transcript meets the compression trigger.
pub(crate) async fn needs_compression(
    deps: &Deps,
    group_id: GroupId,
    absorbed_upto: Option<MessageId>,
    session_budget: i64,
) -> Result<bool, sqlx::Error> {
    let (count, chars) = deps.store.group_pending_size(group_id, absorbed_upto).await?;
    Ok(count >= GROUP_COMPRESSION_MESSAGES as i64 && chars * 2 >= session_budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaker_prefixes_are_stripped() {
        assert_eq!(strip_speaker_prefix("李白：举杯邀明月", "李白"), "举杯邀明月");
        assert_eq!(strip_speaker_prefix("李白: 好", "李白"), "好");
        assert_eq!(strip_speaker_prefix("好酒！李白：来", "李白"), "好酒！李白：来");
    }

    #[test]
    fn a_group_speaks_its_members_language_or_else_the_users() {
        let member = |language: &str| Member {
            character_id: fastnpc_shared::ids::CharacterId::new(),
            name: "x".into(),
            brief: None,
            profile: None,
            status: "ready".into(),
            absorbed_upto: None,
            language: language.into(),
        };
        let user = |language: &str| store::users::UserRecord {
            user_id: fastnpc_shared::ids::UserId::new(),
            username: "ada".into(),
            bio: String::new(),
            ctx_max_chat: 0,
            ctx_max_stm: 0,
            ctx_max_ltm: 0,
            max_group_rounds: 1,
            language: language.into(),
            is_admin: false,
            created_at: chrono::Utc::now(),
        };
        let language = |members: &[Member], user: &store::users::UserRecord| group_prompts(members, user).language();
        assert_eq!(language(&[member("en"), member("en")], &user("zh")), Language::En);
        assert_eq!(language(&[member("zh"), member("zh")], &user("en")), Language::Zh);
        assert_eq!(language(&[member("zh"), member("en")], &user("en")), Language::En);
        assert_eq!(language(&[member("en"), member("zh")], &user("zh")), Language::Zh);
    }
}
