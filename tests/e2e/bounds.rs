//! Bounds on concurrency: what one worker and one process run at once.
