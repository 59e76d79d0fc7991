//! Test support for FastNPC: end-to-end helpers over real services, the LLM simulator and the
//! load generator.

pub mod harness;
pub mod sim;
pub mod sse_client;
