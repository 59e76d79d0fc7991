//! The material a character is generated from.

use serde::{Deserialize, Serialize};

/// The original capped the Markdown it sent per call at 20,000 characters; we cap the source
/// itself the same way so one character's prompts stay within a predictable budget.
pub const MAX_PROMPT_SOURCE_CHARS: usize = 20_000;
/// Submissions beyond this are refused outright: the cap above would silently drop most of it.
pub const MAX_SOURCE_CHARS: usize = 100_000;
/// Below this there is nothing to build a persona from (the original "reasonably guessed" a whole
/// profile from an empty crawl; we refuse instead).
pub const MIN_SOURCE_CHARS: usize = 20;

/// Where a character's facts come from. Tagged by `kind` so encyclopedia kinds (Baidu Baike,
/// Wikipedia) can be added without breaking clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CharacterSource {
    /// Text the user pasted (an encyclopedia entry, a biography, a story excerpt).
    Text { text: String },
}

/// Why a source was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("source.text is empty")]
    Empty,
    #[error("source.text has {chars} characters; at least {MIN_SOURCE_CHARS} are needed to build a persona")]
    TooShort { chars: usize },
    #[error("source.text has {chars} characters; the limit is {MAX_SOURCE_CHARS}")]
    TooLong { chars: usize },
}

impl CharacterSource {
    /// Checks the source can produce a character.
    pub fn validate(&self) -> Result<(), SourceError> {
        match self {
            Self::Text { text } => {
                let chars = text.trim().chars().count();
                match chars {
                    0 => Err(SourceError::Empty),
                    n if n < MIN_SOURCE_CHARS => Err(SourceError::TooShort { chars: n }),
                    n if n > MAX_SOURCE_CHARS => Err(SourceError::TooLong { chars: n }),
                    _ => Ok(()),
                }
            }
        }
    }

    /// The source as the Markdown document every generation prompt embeds, capped at
    /// [`MAX_PROMPT_SOURCE_CHARS`] (cut on a character boundary, never inside a code point).
    pub fn to_prompt_markdown(&self, name: &str) -> String {
        match self {
            Self::Text { text } => {
                let document = format!("# {name}\n\n{}", text.trim());
                match document.char_indices().nth(MAX_PROMPT_SOURCE_CHARS) {
                    Some((cut, _)) => document[..cut].to_owned(),
                    None => document,
                }
            }
        }
    }

    /// Size of the source in characters (the original's 来源信息量).
    pub fn size_chars(&self) -> usize {
        match self {
            Self::Text { text } => text.chars().count(),
        }
    }

    /// Where the source lives, when it has an address.
    pub fn url(&self) -> Option<&str> {
        match self {
            Self::Text { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_markdown_is_capped_on_a_char_boundary() {
        let source = CharacterSource::Text { text: "亮".repeat(MAX_PROMPT_SOURCE_CHARS * 2) };
        let markdown = source.to_prompt_markdown("诸葛亮");
        assert_eq!(markdown.chars().count(), MAX_PROMPT_SOURCE_CHARS);
        assert!(markdown.starts_with("# 诸葛亮\n\n亮"));
    }

    #[test]
    fn validation_names_the_problem() {
        let text = |t: &str| CharacterSource::Text { text: t.to_owned() };
        assert_eq!(text("   ").validate(), Err(SourceError::Empty));
        assert_eq!(text("short").validate(), Err(SourceError::TooShort { chars: 5 }));
        assert!(text(&"x".repeat(MAX_SOURCE_CHARS + 1)).validate().is_err());
        assert!(text("诸葛亮，字孔明，琅琊阳都人，三国时期蜀汉丞相。").validate().is_ok());
    }

    #[test]
    fn unknown_kinds_and_fields_are_rejected() {
        assert!(serde_json::from_str::<CharacterSource>(r#"{"kind":"baike","text":"x"}"#).is_err());
        assert!(serde_json::from_str::<CharacterSource>(r#"{"kind":"text","text":"x","extra":1}"#).is_err());
    }
}
