//! Domain vocabulary: what a character is made of and where it comes from.

pub mod profile;
pub mod source;

pub use profile::{CATEGORIES, CategorySpec, FieldSpec, Profile, ProfileError};
pub use source::{CharacterSource, SourceError, prompt_document};
