//! End-to-end tests over the real Postgres, RabbitMQ and Redis, with the LLM simulator standing
//! in for the paid model. One test binary, so the workspace links it once.

mod accounts;
mod admin;
mod bounds;
mod browser;
mod cancel;
mod characters;
mod chat;
mod cli;
mod crash;
mod dead_letters;
mod delivery;
mod embedded;
mod evaluation;
mod groups;
mod isolation;
mod llm_faults;
mod llm_servers;
mod matrix;
mod memory;
mod operations;
mod outages;
mod parsers;
mod quotas;
mod real_llm;
mod security;
mod serial;
mod shutdown;
mod sources;
mod streaming;
mod usage;
mod web;
mod web_app;
mod web_app_more;
mod web_app_sources;
