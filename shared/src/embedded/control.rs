//! Cancel signals without Redis: in the embedded mode the API and the jobs it cancels share a
//! process, so "cancel job X" can reach the job's token directly.
//!
//! As with the Redis signal, this only makes cancellation prompt. The API still records the
//! request in the job row first, and the worker's heartbeat reads it back, so a cancel for a job
//! that is not registered yet (claimed a moment later) is not lost.

use std::convert::Infallible;

use crate::{control::CancelRegistry, ids::JobId};

/// Sends cancel signals to the jobs running in this process (the API side of
/// `control::ControlSender`).
#[derive(Clone, Default)]
pub struct LocalControl {
    registry: CancelRegistry,
}

impl LocalControl {
    /// Over the registry the process's workers register their running jobs in.
    pub fn new(registry: CancelRegistry) -> Self {
        Self { registry }
    }

    /// Asks the job to stop now, if it runs in this process; a job that does not is ignored,
    /// like a Redis signal no worker listens for.
    pub async fn cancel(&self, job_id: JobId) -> Result<(), Infallible> {
        self.registry.cancel(job_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;

    #[tokio::test]
    async fn cancelling_a_registered_job_cancels_only_its_token() {
        let registry = CancelRegistry::default();
        let control = LocalControl::new(registry.clone());
        let (target, bystander) = (CancellationToken::new(), CancellationToken::new());
        let target_job = JobId::new();
        let _target = registry.register(target_job, target.clone());
        let _bystander = registry.register(JobId::new(), bystander.clone());

        control.cancel(target_job).await.unwrap();

        assert!(target.is_cancelled());
        assert!(!bystander.is_cancelled());
    }

    #[tokio::test]
    async fn cancelling_an_unknown_or_finished_job_does_nothing() {
        let registry = CancelRegistry::default();
        let control = LocalControl::new(registry.clone());
        let token = CancellationToken::new();
        let finished_job = JobId::new();
        drop(registry.register(finished_job, token.clone()));

        control.cancel(JobId::new()).await.unwrap();
        control.cancel(finished_job).await.unwrap();

        assert!(!token.is_cancelled());
    }
}
