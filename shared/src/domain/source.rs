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

/// Longest encyclopedia title accepted (MediaWiki's own limit is 255 bytes).
pub const MAX_TITLE_CHARS: usize = 255;
/// Longest URL accepted.
pub const MAX_URL_CHARS: usize = 2048;

/// Where a character's facts come from, tagged by `kind`. Every kind but `text` is fetched by
/// the worker as the first step of the generation job (`crate::sources`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CharacterSource {
    /// Text the user pasted (an encyclopedia entry, a biography, a story excerpt): 20 to 100,000
    /// characters after trimming.
    Text {
        #[schema(min_length = 20)]
        text: String,
    },
    /// A Wikipedia article, in the language edition `lang` (`zh`, `en`, `zh-yue`, `simple`, …).
    Wikipedia {
        #[schema(pattern = "^[a-z]{2,12}(-[a-z]{2,12})*$", max_length = 24)]
        lang: String,
        /// Without `|#<>[]{}`.
        #[schema(min_length = 1, max_length = 255)]
        title: String,
    },
    /// A Baidu Baike lemma; `id` picks one meaning of a polysemous title.
    Baike {
        /// Without `/?#`.
        #[schema(min_length = 1, max_length = 255)]
        title: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(pattern = "^[0-9]{1,20}$")]
        id: Option<String>,
    },
    /// Any web page: an `http(s)` URL without credentials, resolving to a public address.
    Url {
        #[schema(max_length = 2048, format = "uri")]
        url: String,
    },
}

/// Why a source was refused; each message names the field.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("source.text is empty")]
    Empty,
    #[error("source.text has {chars} characters; at least {MIN_SOURCE_CHARS} are needed to build a persona")]
    TooShort { chars: usize },
    #[error("source.text has {chars} characters; the limit is {MAX_SOURCE_CHARS}")]
    TooLong { chars: usize },
    #[error("source.title {0}")]
    Title(&'static str),
    #[error("source.lang must be a Wikipedia language code such as `zh`, `en` or `zh-yue`")]
    Lang,
    #[error("source.id must be the digits of a Baike lemma id")]
    LemmaId,
    #[error("source.url {0}")]
    Url(String),
}

impl CharacterSource {
    /// Checks the source can produce a character (fetched kinds: that the request is well
    /// formed; whether the article exists is the job's to find out).
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
            Self::Wikipedia { lang, title } => {
                validate_title(title)?;
                // `|` separates titles in the Action API: one title must stay one.
                if title.contains(['|', '#', '<', '>', '[', ']', '{', '}']) {
                    return Err(SourceError::Title("contains a character Wikipedia titles cannot have"));
                }
                let code = |part: &str| (2..=12).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_lowercase());
                if lang.len() > 24 || !lang.split('-').all(code) {
                    return Err(SourceError::Lang);
                }
                Ok(())
            }
            Self::Baike { title, id } => {
                validate_title(title)?;
                if title.contains(['/', '?', '#']) {
                    return Err(SourceError::Title("contains a character Baike lemma titles cannot have"));
                }
                match id {
                    Some(id) if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) => {
                        Err(SourceError::LemmaId)
                    }
                    _ => Ok(()),
                }
            }
            Self::Url { url } => {
                if url.chars().count() > MAX_URL_CHARS {
                    return Err(SourceError::Url(format!("is longer than {MAX_URL_CHARS} characters")));
                }
                let parsed =
                    url::Url::parse(url.trim()).map_err(|error| SourceError::Url(format!("is not a URL: {error}")))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                    return Err(SourceError::Url("must be an http:// or https:// address".into()));
                }
                if !parsed.username().is_empty() || parsed.password().is_some() {
                    return Err(SourceError::Url("must not carry a user name or password".into()));
                }
                Ok(())
            }
        }
    }

    /// The text itself, for a pasted source; fetched kinds have theirs in the character's
    /// source snapshot once the job fetched it.
    pub fn pasted_text(&self) -> Option<&str> {
        match self {
            Self::Text { text } => Some(text),
            _ => None,
        }
    }

    /// How a person would name the source in a message ("Wikipedia (zh): 李白").
    pub fn describe(&self) -> String {
        match self {
            Self::Text { .. } => "the pasted text".to_owned(),
            Self::Wikipedia { lang, title } => format!("Wikipedia ({lang}): {title}"),
            Self::Baike { title, id: Some(id) } => format!("Baidu Baike: {title} ({id})"),
            Self::Baike { title, id: None } => format!("Baidu Baike: {title}"),
            Self::Url { url } => url.clone(),
        }
    }
}

fn validate_title(title: &str) -> Result<(), SourceError> {
    let chars = title.trim().chars().count();
    if chars == 0 {
        return Err(SourceError::Title("is empty"));
    }
    if chars > MAX_TITLE_CHARS {
        return Err(SourceError::Title("is longer than 255 characters"));
    }
    if title.chars().any(char::is_control) {
        return Err(SourceError::Title("contains control characters"));
    }
    Ok(())
}

/// The Markdown document every generation prompt embeds: the name as its heading over the
/// source's text, capped at [`MAX_PROMPT_SOURCE_CHARS`] (cut on a character boundary, never
/// inside a code point).
pub fn prompt_document(name: &str, text: &str) -> String {
    let document = format!("# {name}\n\n{}", text.trim());
    match document.char_indices().nth(MAX_PROMPT_SOURCE_CHARS) {
        Some((cut, _)) => document[..cut].to_owned(),
        None => document,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_markdown_is_capped_on_a_char_boundary() {
        let markdown = prompt_document("诸葛亮", &"亮".repeat(MAX_PROMPT_SOURCE_CHARS * 2));
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
        assert!(serde_json::from_str::<CharacterSource>(r#"{"kind":"book","title":"x"}"#).is_err());
        assert!(serde_json::from_str::<CharacterSource>(r#"{"kind":"text","text":"x","extra":1}"#).is_err());
    }

    #[test]
    fn fetched_kinds_are_checked_for_form() {
        let wiki = |lang: &str, title: &str| CharacterSource::Wikipedia { lang: lang.into(), title: title.into() };
        assert!(wiki("zh", "李白").validate().is_ok());
        assert!(wiki("zh-yue", "李白").validate().is_ok());
        assert!(wiki("simple", "Li Bai").validate().is_ok());
        assert_eq!(wiki("ZH", "李白").validate(), Err(SourceError::Lang));
        assert_eq!(wiki("zh.evil.com/", "李白").validate(), Err(SourceError::Lang));
        assert!(matches!(wiki("zh", "李白|杜甫").validate(), Err(SourceError::Title(_))));
        assert!(matches!(wiki("zh", "  ").validate(), Err(SourceError::Title("is empty"))));
        let baike =
            |title: &str, id: Option<&str>| CharacterSource::Baike { title: title.into(), id: id.map(Into::into) };
        assert!(baike("李白", None).validate().is_ok());
        assert!(baike("李白", Some("1043")).validate().is_ok());
        assert_eq!(baike("李白", Some("10a")).validate(), Err(SourceError::LemmaId));
        assert!(matches!(baike("李白/../x", None).validate(), Err(SourceError::Title(_))));
        let url = |u: &str| CharacterSource::Url { url: u.into() };
        assert!(url("https://example.org/李白").validate().is_ok());
        for bad in ["file:///etc/passwd", "ftp://example.org/", "not a url", "https://user:pw@example.org/"] {
            assert!(matches!(url(bad).validate(), Err(SourceError::Url(_))), "{bad}");
        }
    }

    #[test]
    fn fetched_kinds_round_trip_through_json() {
        let source: CharacterSource = serde_json::from_str(r#"{"kind":"baike","title":"李白","id":"1043"}"#).unwrap();
        assert_eq!(source, CharacterSource::Baike { title: "李白".into(), id: Some("1043".into()) });
        assert_eq!(serde_json::to_value(&source).unwrap()["kind"], "baike");
        assert_eq!(source.describe(), "Baidu Baike: 李白 (1043)");
    }
}
