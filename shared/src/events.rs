//! The per-job event log.
//!
//! Every job has an ordered log: `seq` = 1, 2, 3, … assigned atomically in Redis when the event
//! is appended, so events from the API (`queued`) and from any worker interleave into one order.
//! SSE sends `id: <seq>`, `event: <type>` and the JSON payload as `data`; a client resumes by
//! sending back the last `seq` it saw.

use serde::{Deserialize, Serialize};

use crate::{
    ids::{CharacterId, JobId},
    jobs::JobStatus,
};

/// What happened. The serde tag is the SSE `event:` name; the content is its `data:`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum EventPayload {
    /// The job changed state (queued, running).
    Status { status: JobStatus },
    /// One step finished: for character generation, one profile category.
    Progress { done: u32, total: u32, step: String },
    /// Reply text as it is generated (deltas, coalesced: several model tokens per event). In a
    /// group, `speaker` is the character speaking.
    Token {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        speaker: Option<CharacterId>,
    },
    /// Group chat: the moderator gave the turn to a character.
    Speaker { character_id: CharacterId, name: String, reason: String, confidence: f64, decision: String },
    /// Group chat: a character's message was stored.
    Message { message: serde_json::Value },
    /// Group chat: the loop stopped and waits for the user.
    Waiting { reason: String },
    /// The text streamed so far is void: the model's stream broke and the reply starts over.
    /// Clients drop what they showed since the job's last `reset` (or its start).
    Reset { reason: String },
    /// The job succeeded; `result` is what `GET /v1/jobs/{id}` shows as its result.
    Succeeded { result: serde_json::Value },
    /// The job failed for good.
    Failed { code: String, message: String },
    /// The job was cancelled.
    Cancelled {},
}

impl EventPayload {
    /// The SSE `event:` name.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Status { .. } => "status",
            Self::Progress { .. } => "progress",
            Self::Token { .. } => "token",
            Self::Speaker { .. } => "speaker",
            Self::Message { .. } => "message",
            Self::Waiting { .. } => "waiting",
            Self::Reset { .. } => "reset",
            Self::Succeeded { .. } => "succeeded",
            Self::Failed { .. } => "failed",
            Self::Cancelled {} => "cancelled",
        }
    }

    /// Terminal events end the stream: there is exactly one per job.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Succeeded { .. } | Self::Failed { .. } | Self::Cancelled {})
    }

    /// The `data:` JSON of the event.
    pub fn data_json(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut tagged)) => tagged.remove("data").unwrap_or_default(),
            _ => serde_json::Value::Null,
        }
    }

    /// Rebuilds a payload from its SSE parts (`event:` name and `data:` JSON).
    pub fn from_parts(event_type: &str, data: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::json!({"type": event_type, "data": data}))
    }
}

/// One entry of a job's log.
#[derive(Clone, Debug, PartialEq)]
pub struct JobEvent {
    pub job_id: JobId,
    pub seq: u64,
    pub payload: EventPayload,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_through_their_sse_parts() {
        let payloads = [
            EventPayload::Status { status: JobStatus::Running },
            EventPayload::Progress { done: 3, total: 9, step: "personality".into() },
            EventPayload::Token { text: "你好".into(), speaker: None },
            EventPayload::Token { text: "你好".into(), speaker: Some(CharacterId::new()) },
            EventPayload::Speaker {
                character_id: CharacterId::new(),
                name: "李白".into(),
                reason: "r".into(),
                confidence: 0.9,
                decision: "chosen".into(),
            },
            EventPayload::Waiting { reason: "max_rounds".into() },
            EventPayload::Reset { reason: "stream broke".into() },
            EventPayload::Succeeded { result: serde_json::json!({"character_id": "x"}) },
            EventPayload::Failed { code: "llm_unavailable".into(), message: "m".into() },
            EventPayload::Cancelled {},
        ];
        for payload in payloads {
            let back = EventPayload::from_parts(payload.event_type(), payload.data_json()).unwrap();
            assert_eq!(back, payload);
        }
    }
}
