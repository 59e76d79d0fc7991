//! Every prompt the system sends, kept out of the code that sends it.
//!
//! One module per language; FastNPC is Chinese-first, like the original, so [`zh`] is the only
//! one today. Templates take typed arguments (not `str.format` over user text, which broke the
//! original when a source contained braces).

pub mod zh;
