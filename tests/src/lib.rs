//! Test support for FastNPC: end-to-end helpers over real services, the LLM simulator and the
//! load generator.

pub mod answer_losing_proxy;
pub mod deployment;
pub mod harness;
pub use fastnpc_llm_sim as sim;
pub mod recording_proxy;
pub mod source_fixtures;
/// The SSE reader the command-line client uses, for the tests too.
pub use fastnpc::client::sse as sse_client;
pub mod webdriver;
