//! Per-job accounting without touching the job code: the runner hands each job an
//! [`LlmClient`] that adds every call's usage to the job's [`UsageMeter`], and the store writes
//! the total with the job's outcome.

use std::sync::Arc;

use futures::{FutureExt, StreamExt, future::BoxFuture};

use super::{ChatRequest, Completion, LlmClient, LlmError, Purpose, StreamEvent, TextStream, UsageMeter};

/// An [`LlmClient`] that meters another.
pub struct MeteredLlm {
    inner: Arc<dyn LlmClient>,
    meter: UsageMeter,
}

impl MeteredLlm {
    pub fn new(inner: Arc<dyn LlmClient>, meter: UsageMeter) -> Self {
        Self { inner, meter }
    }
}

impl LlmClient for MeteredLlm {
    fn complete(&self, request: ChatRequest) -> BoxFuture<'_, Result<Completion, LlmError>> {
        async move {
            let completion = self.inner.complete(request).await?;
            self.meter.add(completion.usage);
            Ok(completion)
        }
        .boxed()
    }

    fn stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<TextStream, LlmError>> {
        async move {
            let meter = self.meter.clone();
            let stream = self.inner.stream(request).await?;
            Ok(stream
                .inspect(move |event| {
                    if let Ok(StreamEvent::Finished { usage, .. }) = event {
                        meter.add(*usage);
                    }
                })
                .boxed())
        }
        .boxed()
    }

    fn model_for(&self, purpose: Purpose) -> &str {
        self.inner.model_for(purpose)
    }
}
