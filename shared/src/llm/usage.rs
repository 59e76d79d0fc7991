//! Token usage: what a call cost, summed per job.
//!
//! Servers report usage in the completion (`usage`) and, for streams, in a final chunk when
//! asked with `stream_options.include_usage`. Some do not (llama.cpp-style servers in streaming
//! mode, older proxies): then the adapter counts the tokens itself with a real BPE tokenizer
//! (OpenAI's `o200k_base`), which is exact for OpenAI models and a close, stable estimate for
//! others — better than a missing figure in a user's bill.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::Message;

/// Tokens spent by one or more calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub calls: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    /// One call's usage.
    pub fn call(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self { calls: 1, prompt_tokens, completion_tokens }
    }

    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// One call counted locally, for servers that report no usage.
    pub async fn counted(messages: &[Message], completion: &str) -> Self {
        let prompt: String = messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n");
        let completion = completion.to_owned();
        // The tokenizer's tables are built on first use (a few hundred milliseconds) and
        // encoding is CPU work: neither belongs on an async worker thread.
        tokio::task::spawn_blocking(move || {
            let bpe = tiktoken_rs::o200k_base_singleton();
            // Each message costs a few framing tokens in chat formats.
            let framing = 4;
            let prompt_tokens = bpe.encode_ordinary(&prompt).len() as u64 + framing;
            Self::call(prompt_tokens, bpe.encode_ordinary(&completion).len() as u64)
        })
        .await
        .unwrap_or_default()
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.calls += other.calls;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }
}

/// A running total that several concurrent calls of one job add to; cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct UsageMeter(Arc<Mutex<Usage>>);

impl UsageMeter {
    pub fn add(&self, usage: Usage) {
        *self.0.lock().expect("the usage lock is never poisoned") += usage;
    }

    /// What was added so far.
    pub fn total(&self) -> Usage {
        *self.0.lock().expect("the usage lock is never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counting_gives_plausible_token_numbers() {
        let usage = Usage::counted(&[Message::user("Hello, how are you today?")], "I am fine, thank you.").await;
        assert_eq!(usage.calls, 1);
        assert!((6..=14).contains(&usage.prompt_tokens), "{usage:?}");
        assert!((4..=10).contains(&usage.completion_tokens), "{usage:?}");
        let chinese = Usage::counted(&[Message::user("诸葛亮，字孔明")], "亮躬耕陇亩").await;
        assert!(chinese.completion_tokens >= 2, "{chinese:?}");
    }

    #[test]
    fn a_meter_sums_what_clones_add() {
        let meter = UsageMeter::default();
        let other = meter.clone();
        meter.add(Usage::call(10, 5));
        other.add(Usage::call(1, 2));
        assert_eq!(meter.total(), Usage { calls: 2, prompt_tokens: 11, completion_tokens: 7 });
    }
}
