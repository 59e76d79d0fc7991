//! Graceful shutdown: what SIGTERM does to a worker and to the API.
