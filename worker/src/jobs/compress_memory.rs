//! The three-layer memory cascade for one character (the original's
//! `_check_and_compress_memories`, as a job):
//!
//! 1. **Session → short-term.** When the uncompressed messages exceed the session budget, the
//!    oldest part (the original's split: the first prefix of at least 8 messages holding half the
//!    characters) is summarised by the LLM into `subject | action | object` entries, with the
//!    prefix's last few messages repeated as context; those messages are marked compressed.
//! 2. **Short-term → long-term.** When short-term memory exceeds its budget, its first half is
//!    integrated into long-term memory by the LLM (dedupe, merge, importance 0–15; entries under 4
//!    are dropped) and short-term keeps its second half.
//! 3. **Long-term trim.** When long-term memory exceeds its budget, 30 % of it is dropped at
//!    random, weighted towards older entries, then the oldest go until it fits. No LLM call.
//!
//! Group memory (`compress_group_memory`) runs the same cascade on one member's unabsorbed part
//! of a group transcript instead of the session layer: the original's trigger (≥ 20 messages
//! holding half the session budget), the first two thirds summarised from the member's point of
//! view, two thirds of short-term memory integrated; the member's cursor moves instead of
//! messages being marked.
//!
//! Safety with many workers: compressions of one character run one at a time (serial key
//! `memory:<character>`), and the result is written only if the memory version read at the
//! start is still current (a manual edit in between makes the job start over), in the same
//! transaction that marks exactly the summarised messages compressed. Chat replies never write
//! memories, so they cannot race with this job; they only add messages, which a later
//! compression picks up.

use fastnpc_shared::{
    ids::{CharacterId, GroupId, MessageId},
    jobs::JobError,
    llm::{self, ChatRequest, JsonSchema, Message, Purpose, reply},
    prompts::PromptSet,
    store::{
        self,
        groups::GroupMessageRecord,
        jobs::Claim,
        memories::{self, MemoryEntry},
        messages::MessageRecord,
    },
};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{JobFailure, group_turn::GROUP_COMPRESSION_MESSAGES};
use crate::Deps;

/// Asks per LLM step before giving up on replies that do not parse (the original's 2).
const PARSE_ATTEMPTS: u32 = 2;
/// Times the whole cascade starts over because memory changed under it.
const VERSION_RETRIES: u32 = 3;
/// Messages read per compression (the original's limit).
const WINDOW: i64 = 200;
/// Long-term entries below this importance are dropped (the prompt's "discard < 4").
const MIN_IMPORTANCE: i16 = 4;

/// What a compression absorbs into short-term memory, and how it records that.
enum Absorbed {
    Nothing,
    /// Single chat: these messages become `compressed`.
    Messages(Vec<MessageId>),
    /// Group chat: the member's cursor moves from `from` to `to`.
    GroupCursor {
        group_id: GroupId,
        from: Option<MessageId>,
        to: MessageId,
        count: usize,
    },
}

pub async fn run(deps: &Deps, claim: &Claim, _cancel: &CancellationToken) -> Result<Value, JobFailure> {
    let Some(character_id) = claim.character_id else {
        return Err(JobFailure::Failed(JobError::new("invalid_job", "the job has no character")));
    };
    let gone = || JobFailure::Failed(JobError::new("character_deleted", "the character or group was deleted"));
    let character = deps.store.character_by_id(character_id).await?.ok_or_else(gone)?;
    let user = deps.store.user(claim.user_id).await?.ok_or_else(gone)?;
    let brief = character.brief.clone().unwrap_or_default();
    // A character's memory is written in its own language, in a group too.
    let prompts = character.prompts();

    for _ in 0..VERSION_RETRIES {
        let memory = deps.store.memories(character_id).await?;
        let mut short_term = memory.short_term.clone();
        let mut long_term = memory.long_term.clone();
        let mut added = 0;
        let mut integrated = 0;
        let mut trimmed = 0;

        let (absorbed, new_entries) = match claim.group_id {
            None => absorb_chat(deps, prompts, &character.name, &user, character_id).await?,
            Some(group_id) => absorb_group(deps, prompts, &character.name, &user, group_id, character_id).await?,
        };
        if let Some(entries) = new_entries {
            added = entries.len();
            short_term.extend(entries.into_iter().map(MemoryEntry::new));
        }
        // Group memory integrates two thirds of short-term memory, single chat half (the original's).
        let share = if claim.group_id.is_some() { (2, 3) } else { (1, 2) };
        if memories::chars(&short_term) > user.ctx_max_stm as usize && !short_term.is_empty() {
            let half = (short_term.len() * share.0).div_ceil(share.1);
            let oldest: Vec<MemoryEntry> = short_term.drain(..half).collect();
            integrated = oldest.len();
            long_term = integrate(deps, prompts, &character.name, &brief, &oldest, &long_term).await?;
        }
        if memories::chars(&long_term) > user.ctx_max_ltm as usize {
            let before = long_term.len();
            trim_weighted(&mut long_term, user.ctx_max_ltm as usize, &mut rand::rng());
            trimmed = before - long_term.len();
        }

        let absorbed_ids: Vec<MessageId> = match &absorbed {
            Absorbed::Messages(ids) => ids.clone(),
            _ => Vec::new(),
        };
        let result = json!({
            "absorbed_message_ids": absorbed_ids,
            "absorbed_group_messages": match &absorbed { Absorbed::GroupCursor { count, .. } => *count, _ => 0 },
            "short_term_added": added,
            "integrated_into_long_term": integrated,
            "long_term_trimmed": trimmed,
            "short_term_entries": short_term.len(),
            "long_term_entries": long_term.len(),
            "prompt_version": prompts.version(),
        });
        let changed = !matches!(absorbed, Absorbed::Nothing) || integrated > 0 || trimmed > 0;
        let recorded = match &absorbed {
            Absorbed::Nothing => store::Absorbed::Nothing,
            Absorbed::Messages(ids) => store::Absorbed::Messages(ids.clone()),
            Absorbed::GroupCursor { group_id, from, to, .. } => {
                store::Absorbed::GroupCursor { group_id: *group_id, from: *from, to: *to }
            }
        };
        let write = changed.then_some(store::MemoryWrite {
            expected_version: memory.version,
            short_term: &short_term,
            long_term: &long_term,
            absorbed: &recorded,
        });
        match deps.store.commit_compression(claim, character_id, write, &result).await? {
            store::CompressionCommit::Committed => return Ok(result),
            store::CompressionCommit::MemoryChanged => {
                tracing::info!("memory changed during compression; starting over");
            }
            store::CompressionCommit::AlreadyAbsorbed => {
                tracing::warn!("the session was absorbed by someone else; starting over");
            }
            store::CompressionCommit::LostClaim => return Err(JobFailure::LostClaim),
        }
    }
    Err(JobFailure::Retryable(JobError::new("memory_contended", "memory kept changing during compression")))
}

/// Single chat: when the uncompressed messages exceed the session budget, summarise the oldest
/// part.
async fn absorb_chat(
    deps: &Deps,
    prompts: &dyn PromptSet,
    character: &str,
    user: &store::users::UserRecord,
    character_id: CharacterId,
) -> Result<(Absorbed, Option<Vec<String>>), JobFailure> {
    // The trigger's total (all uncompressed messages), then the oldest window of them: with a
    // long backlog the oldest part goes first, so memories stay in order.
    if deps.store.uncompressed_chars(character_id).await? <= i64::from(user.ctx_max_chat) {
        return Ok((Absorbed::Nothing, None));
    }
    let session = deps.store.oldest_uncompressed(character_id, WINDOW).await?;
    let prefix = &session[..split_point(&session)];
    let line =
        |m: &MessageRecord| format!("{}: {}", if m.author == "user" { &user.username } else { character }, m.content);
    let overlap_count = (prefix.len() / 4).clamp(2, 4).min(prefix.len());
    let overlap: Vec<String> = prefix[prefix.len() - overlap_count..].iter().map(line).collect();
    let conversation: Vec<String> = prefix.iter().map(line).collect();
    let prompt = prompts.stm_compression(character, &user.username, &overlap.join("\n"), &conversation.join("\n"));
    let entries = summarise(deps, prompts, prompt).await?;
    Ok((Absorbed::Messages(prefix.iter().map(|m| m.message_id).collect()), Some(entries)))
}

/// Group chat: when the member's unabsorbed transcript meets the trigger (≥ 20 messages holding
/// half the session budget), summarise its first two thirds from the member's point of view,
/// with the five messages before the cut repeated as context.
async fn absorb_group(
    deps: &Deps,
    prompts: &dyn PromptSet,
    character: &str,
    user: &store::users::UserRecord,
    group_id: GroupId,
    character_id: CharacterId,
) -> Result<(Absorbed, Option<Vec<String>>), JobFailure> {
    let members = deps.store.group_members(group_id).await?;
    let Some(member) = members.iter().find(|m| m.character_id == character_id) else {
        return Ok((Absorbed::Nothing, None)); // left the group meanwhile
    };
    let pending = deps.store.group_messages_after(group_id, member.absorbed_upto, WINDOW).await?;
    let chars: usize = pending.iter().map(|m| m.content.chars().count()).sum();
    if pending.len() < GROUP_COMPRESSION_MESSAGES || chars * 2 < user.ctx_max_chat as usize {
        return Ok((Absorbed::Nothing, None));
    }
    let split = (pending.len() * 2).div_ceil(3);
    let prefix = &pending[..split];
    let line = |m: &GroupMessageRecord| {
        let speaker = if m.author == "user" {
            user.username.clone()
        } else if m.character_id == Some(character_id) {
            prompts.own_speaker_label(character)
        } else {
            m.speaker_name.clone()
        };
        format!("{speaker}: {}", m.content)
    };
    let overlap: Vec<String> = prefix[prefix.len().saturating_sub(5)..].iter().map(line).collect();
    let conversation: Vec<String> = prefix.iter().map(line).collect();
    let mut participants: Vec<String> = vec![user.username.clone()];
    participants.extend(members.iter().map(|m| m.name.clone()));
    let prompt = prompts.group_stm_compression(
        character,
        &participants.join(prompts.name_separator()),
        &overlap.join("\n"),
        &conversation.join("\n"),
    );
    let entries = summarise(deps, prompts, prompt).await?;
    let to = prefix.last().expect("the prefix holds at least 14 messages").message_id;
    Ok((Absorbed::GroupCursor { group_id, from: member.absorbed_upto, to, count: prefix.len() }, Some(entries)))
}

/// The original's split: the first prefix of at least 8 messages holding half of the characters;
/// failing that, `max(8, n/2)` messages (all of them when there are fewer).
fn split_point(messages: &[MessageRecord]) -> usize {
    let sizes: Vec<usize> = messages.iter().map(|m| m.content.chars().count()).collect();
    let total: usize = sizes.iter().sum();
    let mut cumulative = 0;
    for (index, size) in sizes.iter().enumerate() {
        cumulative += size;
        let count = index + 1;
        if count >= 8 && cumulative * 2 >= total {
            return count;
        }
    }
    messages.len().min(8.max(messages.len() / 2))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShortMemories {
    short_memories: Vec<String>,
}

async fn summarise(deps: &Deps, prompts: &dyn PromptSet, prompt: String) -> Result<Vec<String>, JobFailure> {
    let request = ChatRequest {
        messages: vec![Message::system(prompts.stm_system()), Message::user(prompt)],
        json_schema: Some(JsonSchema {
            name: "fastnpc_short_term_memory".into(),
            schema: json!({
                "type": "object",
                "properties": {"short_memories": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
                "required": ["short_memories"],
                "additionalProperties": false,
            }),
        }),
        purpose: Purpose::MemoryShortTerm,
        ..Default::default()
    };
    ask_json(deps, request, |parsed: ShortMemories| {
        let entries: Vec<String> =
            parsed.short_memories.into_iter().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect();
        (!entries.is_empty()).then_some(entries)
    })
    .await
}

#[derive(Deserialize)]
struct Integrated {
    long_term_memories: Vec<IntegratedEntry>,
}

#[derive(Deserialize)]
struct IntegratedEntry {
    content: String,
    importance: i16,
}

async fn integrate(
    deps: &Deps,
    prompts: &dyn PromptSet,
    character: &str,
    brief: &str,
    short_term: &[MemoryEntry],
    long_term: &[MemoryEntry],
) -> Result<Vec<MemoryEntry>, JobFailure> {
    let contents = |entries: &[MemoryEntry]| entries.iter().map(|e| e.content.clone()).collect::<Vec<_>>();
    let request = ChatRequest {
        messages: vec![
            Message::system(prompts.ltm_system()),
            Message::user(prompts.ltm_integration(character, brief, &contents(short_term), &contents(long_term))),
        ],
        json_schema: Some(JsonSchema {
            name: "fastnpc_long_term_memory".into(),
            schema: json!({
                "type": "object",
                "properties": {
                    "long_term_memories": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "content": {"type": "string"},
                                "importance": {"type": "integer", "minimum": 0, "maximum": 15},
                                "reason": {"type": "string"},
                            },
                            "required": ["content", "importance", "reason"],
                            "additionalProperties": false,
                        },
                    },
                    "merged_count": {"type": "integer"},
                    "discarded_count": {"type": "integer"},
                },
                "required": ["long_term_memories", "merged_count", "discarded_count"],
                "additionalProperties": false,
            }),
        }),
        purpose: Purpose::MemoryLongTerm,
        ..Default::default()
    };
    ask_json(deps, request, |parsed: Integrated| {
        let kept: Vec<MemoryEntry> = parsed
            .long_term_memories
            .into_iter()
            .filter(|e| (0..=15).contains(&e.importance) && !e.content.trim().is_empty())
            .filter(|e| e.importance >= MIN_IMPORTANCE)
            .map(|e| MemoryEntry { content: e.content.trim().to_owned(), importance: Some(e.importance) })
            .collect();
        Some(kept)
    })
    .await
}

/// Asks for JSON, reads it into `T` (tolerantly, coerced to the request's schema) and accepts
/// it through `accept`; a refused reply goes back to the model with the reason (up to
/// [`PARSE_ATTEMPTS`] replies).
async fn ask_json<T, R>(deps: &Deps, request: ChatRequest, accept: impl Fn(T) -> Option<R>) -> Result<R, JobFailure>
where
    T: serde::de::DeserializeOwned,
{
    let purpose = request.purpose;
    let schema = request.json_schema.as_ref().map(|s| s.schema.clone()).unwrap_or_default();
    llm::ask_structured(deps.llm.as_ref(), request, PARSE_ATTEMPTS, |text| {
        let parsed: T = reply::parse(text, &schema)?;
        accept(parsed).ok_or_else(|| "the JSON has no usable entries".to_owned())
    })
    .await?
    .map_err(|reason| super::malformed(purpose.as_str(), PARSE_ATTEMPTS, &reason))
}

/// The original's weighted trim: drop 30 % of the entries at random, older ones more likely
/// (weight n − i), then drop from the oldest until the rest fits `budget` characters.
fn trim_weighted(entries: &mut Vec<MemoryEntry>, budget: usize, rng: &mut impl Rng) {
    let drop_count = entries.len() * 3 / 10;
    for _ in 0..drop_count {
        let n = entries.len();
        let total_weight: usize = (1..=n).sum();
        let mut pick = rng.random_range(0..total_weight);
        let mut index = 0;
        for (i, weight) in (1..=n).rev().enumerate() {
            if pick < weight {
                index = i;
                break;
            }
            pick -= weight;
        }
        entries.remove(index);
    }
    while memories::chars(entries) > budget && !entries.is_empty() {
        entries.remove(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn message(chars: usize) -> MessageRecord {
        MessageRecord {
            message_id: MessageId::new(),
            character_id: fastnpc_shared::ids::CharacterId::new(),
            author: "user".into(),
            content: "字".repeat(chars),
            compressed: false,
            job_id: None,
            reply_to: None,
            prompt_snapshot: None,
            truncated: false,
            prompt_version: None,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn split_takes_at_least_eight_messages_and_half_the_text() {
        let even: Vec<_> = (0..20).map(|_| message(10)).collect();
        assert_eq!(split_point(&even), 10);
        let front_heavy: Vec<_> = std::iter::once(message(1000)).chain((0..19).map(|_| message(10))).collect();
        assert_eq!(split_point(&front_heavy), 8);
        let few: Vec<_> = (0..5).map(|_| message(10)).collect();
        assert_eq!(split_point(&few), 5);
    }

    #[test]
    fn trim_fits_the_budget_and_prefers_dropping_old_entries() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut newest_kept = 0;
        let mut oldest_kept = 0;
        for _ in 0..200 {
            let mut entries: Vec<_> = (0..10).map(|i| MemoryEntry::new(format!("{i:02}"))).collect();
            trim_weighted(&mut entries, 14, &mut rng);
            assert!(memories::chars(&entries) <= 14);
            newest_kept += entries.iter().any(|e| e.content == "09") as u32;
            oldest_kept += entries.iter().any(|e| e.content == "00") as u32;
        }
        assert!(newest_kept > oldest_kept, "newest kept {newest_kept} times, oldest {oldest_kept}");
    }
}
