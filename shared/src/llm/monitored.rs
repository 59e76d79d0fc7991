//! An [`LlmClient`] that records every call in the process's [`Metrics`]: calls by purpose and
//! outcome, latency, time to a stream's first token, tokens used. Wraps the process's client
//! once; the per-attempt usage meter (`MeteredLlm`) wraps this.

use std::{sync::Arc, time::Instant};

use futures::{FutureExt, StreamExt, future::BoxFuture};

use super::{ChatRequest, Completion, LlmClient, LlmError, Purpose, StreamEvent, TextStream, Usage};
use crate::metrics::{LlmOutcomeLabels, Metrics, PurposeLabels, TokenLabels};

pub struct MonitoredLlm {
    inner: Arc<dyn LlmClient>,
    metrics: Arc<Metrics>,
}

impl MonitoredLlm {
    pub fn new(inner: Arc<dyn LlmClient>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

/// What one call did, recorded when it ends.
struct Call {
    metrics: Arc<Metrics>,
    purpose: &'static str,
    started: Instant,
}

impl Call {
    fn start(metrics: &Arc<Metrics>, purpose: Purpose) -> Self {
        Self { metrics: metrics.clone(), purpose: purpose.as_str(), started: Instant::now() }
    }

    fn first_token(&self) {
        let labels = PurposeLabels { purpose: self.purpose };
        self.metrics.llm_first_token.get_or_create(&labels).observe(self.started.elapsed().as_secs_f64());
    }

    fn end(&self, outcome: Result<Usage, &LlmError>) {
        let purpose = self.purpose;
        let labels = PurposeLabels { purpose };
        self.metrics.llm_call_duration.get_or_create(&labels).observe(self.started.elapsed().as_secs_f64());
        let outcome = match outcome {
            Ok(usage) => {
                for (direction, tokens) in [("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens)] {
                    self.metrics.llm_tokens.get_or_create(&TokenLabels { purpose, direction }).inc_by(tokens);
                }
                "ok".to_owned()
            }
            Err(error) => error.kind.code().to_owned(),
        };
        self.metrics.llm_calls.get_or_create(&LlmOutcomeLabels { purpose, outcome }).inc();
    }
}

impl LlmClient for MonitoredLlm {
    fn complete(&self, request: ChatRequest) -> BoxFuture<'_, Result<Completion, LlmError>> {
        async move {
            let call = Call::start(&self.metrics, request.purpose);
            let completion = self.inner.complete(request).await;
            call.end(completion.as_ref().map(|c| c.usage));
            completion
        }
        .boxed()
    }

    fn stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<TextStream, LlmError>> {
        async move {
            let call = Call::start(&self.metrics, request.purpose);
            let stream = match self.inner.stream(request).await {
                Ok(stream) => stream,
                Err(error) => {
                    call.end(Err(&error));
                    return Err(error);
                }
            };
            let mut first = true;
            Ok(stream
                .inspect(move |event| match event {
                    Ok(StreamEvent::Text(_)) if first => {
                        first = false;
                        call.first_token();
                    }
                    Ok(StreamEvent::Text(_)) => {}
                    Ok(StreamEvent::Finished { usage, .. }) => call.end(Ok(*usage)),
                    Err(error) => call.end(Err(error)),
                })
                .boxed())
        }
        .boxed()
    }

    fn model_for(&self, purpose: Purpose) -> &str {
        self.inner.model_for(purpose)
    }
}
