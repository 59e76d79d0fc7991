//! Wikipedia through the MediaWiki Action API (`api.php`), in any language edition.
//!
//! The article comes as plain text from the TextExtracts extension (`prop=extracts` with
//! `explaintext`), which every Wikimedia wiki runs: no HTML to clean, section headings as
//! `== … ==` lines that [`extract_to_markdown`] turns into Markdown headings. `redirects` follows
//! redirects server-side (李太白 → 李白), `prop=info` with `inprop=url` gives the canonical URL
//! and the revision id, and `prop=pageprops` marks disambiguation pages (`disambiguation`) so an
//! ambiguous title is never taken for the person.
//!
//! Candidates for a name come from one `generator=search` request that also returns each page's
//! short description (Wikidata's, `prop=description`) and whether it is a disambiguation page; a
//! disambiguation page is replaced by the articles it links to (`generator=links`).
//!
//! This module builds the request URLs and reads the answers (formatversion 2); fetching is the
//! caller's ([`super::Sources`]), through the guarded fetcher.

use serde::Deserialize;
use url::Url;

use super::Candidate;

/// Candidates asked for per search (and links read from a disambiguation page).
pub const CANDIDATE_LIMIT: usize = 20;

/// The endpoint of language edition `lang`: `template` with `{lang}` replaced
/// (`https://{lang}.wikipedia.org/w/api.php` by default).
pub fn endpoint(template: &str, lang: &str) -> Result<Url, url::ParseError> {
    Url::parse(&template.replace("{lang}", lang))
}

fn query(endpoint: &Url, parameters: &[(&str, &str)]) -> Url {
    let mut url = endpoint.clone();
    url.query_pairs_mut()
        .extend_pairs([("action", "query"), ("format", "json"), ("formatversion", "2"), ("redirects", "1")])
        .extend_pairs(parameters);
    url
}

/// The article `title`: its plain text, canonical URL, revision and disambiguation flag.
pub fn article_url(endpoint: &Url, title: &str) -> Url {
    query(
        endpoint,
        &[
            ("prop", "extracts|info|pageprops"),
            ("explaintext", "1"),
            ("exsectionformat", "wiki"),
            ("inprop", "url"),
            ("ppprop", "disambiguation"),
            ("titles", title),
        ],
    )
}

/// Whether `title` exists and is a disambiguation page, without its text (the API's check
/// before it accepts a character).
pub fn probe_url(endpoint: &Url, title: &str) -> Url {
    query(endpoint, &[("prop", "info|pageprops"), ("inprop", "url"), ("ppprop", "disambiguation"), ("titles", title)])
}

/// Pages matching `text`, best first, with descriptions.
pub fn search_url(endpoint: &Url, text: &str) -> Url {
    let limit = CANDIDATE_LIMIT.to_string();
    query(
        endpoint,
        &[
            ("generator", "search"),
            ("gsrsearch", text),
            ("gsrnamespace", "0"),
            ("gsrlimit", &limit),
            ("prop", "description|info|pageprops"),
            ("inprop", "url"),
            ("ppprop", "disambiguation"),
        ],
    )
}

/// The articles a disambiguation page links to, with descriptions.
pub fn links_url(endpoint: &Url, title: &str) -> Url {
    let limit = CANDIDATE_LIMIT.to_string();
    query(
        endpoint,
        &[
            ("generator", "links"),
            ("titles", title),
            ("gplnamespace", "0"),
            ("gpllimit", &limit),
            ("prop", "description|info|pageprops"),
            ("inprop", "url"),
            ("ppprop", "disambiguation"),
        ],
    )
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    query: Option<QueryPart>,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    code: String,
    #[serde(default)]
    info: String,
}

#[derive(Deserialize)]
struct QueryPart {
    #[serde(default)]
    pages: Vec<Page>,
}

#[derive(Deserialize)]
struct Page {
    title: String,
    #[serde(default)]
    missing: bool,
    #[serde(default)]
    invalid: bool,
    #[serde(default)]
    extract: Option<String>,
    #[serde(default)]
    lastrevid: Option<u64>,
    #[serde(default)]
    canonicalurl: Option<String>,
    #[serde(default)]
    fullurl: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    pageprops: Option<PageProps>,
    /// A search result's rank.
    #[serde(default)]
    index: Option<u32>,
}

#[derive(Deserialize)]
struct PageProps {
    #[serde(default)]
    disambiguation: Option<serde_json::Value>,
}

impl Page {
    fn is_disambiguation(&self) -> bool {
        self.pageprops.as_ref().is_some_and(|props| props.disambiguation.is_some())
    }

    fn url(&self) -> String {
        self.canonicalurl.clone().or_else(|| self.fullurl.clone()).unwrap_or_default()
    }

    fn candidate(&self) -> Candidate {
        Candidate {
            title: self.title.clone(),
            id: None,
            description: self.description.clone().unwrap_or_default(),
            url: self.url(),
        }
    }
}

/// What the wiki said about one title.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Article(Article),
    /// A disambiguation page: the title names several articles.
    Disambiguation {
        title: String,
    },
    Missing,
}

/// An article, after redirects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Article {
    pub title: String,
    pub url: String,
    pub revision: Option<u64>,
    /// The text as Markdown (empty for a probe).
    pub markdown: String,
}

/// The wiki's answer was not what the Action API answers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    #[error("the wiki answered something that is not an Action API reply: {0}")]
    Malformed(String),
    #[error("the wiki refused the request ({code}: {info})")]
    Refused { code: String, info: String },
}

fn pages(body: &[u8]) -> Result<Vec<Page>, AnswerError> {
    let answer: Answer = serde_json::from_slice(body).map_err(|error| AnswerError::Malformed(error.to_string()))?;
    if let Some(ApiError { code, info }) = answer.error {
        return Err(AnswerError::Refused { code, info });
    }
    Ok(answer.query.map(|query| query.pages).unwrap_or_default())
}

/// Reads the answer to [`article_url`] or [`probe_url`].
pub fn parse_lookup(body: &[u8]) -> Result<Lookup, AnswerError> {
    let Some(page) = pages(body)?.into_iter().next() else {
        return Ok(Lookup::Missing);
    };
    Ok(if page.missing || page.invalid {
        Lookup::Missing
    } else if page.is_disambiguation() {
        Lookup::Disambiguation { title: page.title }
    } else {
        Lookup::Article(Article {
            url: page.url(),
            revision: page.lastrevid,
            markdown: extract_to_markdown(page.extract.as_deref().unwrap_or_default()),
            title: page.title,
        })
    })
}

/// Reads the answer to [`search_url`] or [`links_url`]: the articles in rank order, and the
/// disambiguation pages among them (to be expanded by the caller).
pub fn parse_candidates(body: &[u8]) -> Result<(Vec<Candidate>, Vec<String>), AnswerError> {
    let mut pages = pages(body)?;
    pages.retain(|page| !page.missing && !page.invalid);
    pages.sort_by(|a, b| a.index.cmp(&b.index).then_with(|| a.title.cmp(&b.title)));
    let (disambiguations, articles): (Vec<Page>, Vec<Page>) = pages.into_iter().partition(Page::is_disambiguation);
    Ok((articles.iter().map(Page::candidate).collect(), disambiguations.into_iter().map(|page| page.title).collect()))
}

/// TextExtracts' plain text with `== Heading ==` lines (`exsectionformat=wiki`) → Markdown;
/// empty sections (the extract keeps headings of sections that held only tables or lists it
/// dropped) go.
pub fn extract_to_markdown(extract: &str) -> String {
    // Blocks with their heading level (0 for text).
    let mut blocks: Vec<(usize, String)> = Vec::new();
    // A heading is empty when the next block is a heading of its level or above (a subsection
    // is content).
    let drop_empty_headings = |blocks: &mut Vec<(usize, String)>, next_level: usize| {
        while blocks.last().is_some_and(|(level, _)| *level > 0 && *level >= next_level) {
            blocks.pop();
        }
    };
    for line in extract.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        let level = line.chars().take_while(|&c| c == '=').count();
        if level >= 2 && line.ends_with(&"=".repeat(level)) && line.len() > 2 * level {
            let heading = line[level..line.len() - level].trim();
            drop_empty_headings(&mut blocks, level);
            blocks.push((level, format!("{} {heading}", "#".repeat(level.min(6)))));
        } else {
            blocks.push((0, line.to_owned()));
        }
    }
    drop_empty_headings(&mut blocks, 1);
    blocks.into_iter().map(|(_, block)| block).collect::<Vec<_>>().join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Url {
        super::endpoint("https://{lang}.wikipedia.org/w/api.php", "zh").unwrap()
    }

    #[test]
    fn requests_follow_redirects_and_ask_for_text_url_revision_and_disambiguation() {
        let url = article_url(&endpoint(), "李白");
        assert_eq!(url.host_str(), Some("zh.wikipedia.org"));
        let pairs: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs["titles"], "李白");
        assert_eq!(pairs["redirects"], "1");
        assert_eq!(pairs["prop"], "extracts|info|pageprops");
        assert_eq!(pairs["explaintext"], "1");
        assert_eq!(pairs["formatversion"], "2");
    }

    #[test]
    fn an_article_a_missing_page_and_a_disambiguation_page_are_told_apart() {
        let article = br#"{"batchcomplete":true,"query":{"redirects":[{"from":"Li Po","to":"Li Bai"}],"pages":[
            {"pageid":18008,"ns":0,"title":"Li Bai","extract":"Li Bai was a poet.\n\n\n== Life ==\n=== Youth ===\nBorn in 701.\n\n== Gallery ==\n\n== Legacy ==\nRead widely.\n== Notes ==","lastrevid":123,"canonicalurl":"https://en.wikipedia.org/wiki/Li_Bai"}]}}"#;
        assert_eq!(
            parse_lookup(article).unwrap(),
            Lookup::Article(Article {
                title: "Li Bai".into(),
                url: "https://en.wikipedia.org/wiki/Li_Bai".into(),
                revision: Some(123),
                markdown: "Li Bai was a poet.\n\n## Life\n\n### Youth\n\nBorn in 701.\n\n## Legacy\n\nRead widely."
                    .into(),
            })
        );
        let missing = br#"{"batchcomplete":true,"query":{"pages":[{"ns":0,"title":"Nobody","missing":true}]}}"#;
        assert_eq!(parse_lookup(missing).unwrap(), Lookup::Missing);
        let ambiguous =
            br#"{"query":{"pages":[{"pageid":1,"ns":0,"title":"Mercury","pageprops":{"disambiguation":""}}]}}"#;
        assert_eq!(parse_lookup(ambiguous).unwrap(), Lookup::Disambiguation { title: "Mercury".into() });
        let refused = br#"{"error":{"code":"badvalue","info":"Unrecognized value"}}"#;
        assert!(matches!(parse_lookup(refused), Err(AnswerError::Refused { .. })));
        assert!(matches!(parse_lookup(b"<html>"), Err(AnswerError::Malformed(_))));
    }

    #[test]
    fn candidates_keep_the_search_rank_and_set_disambiguation_pages_aside() {
        let body = br#"{"query":{"pages":[
            {"title":"B","index":2,"description":"second","canonicalurl":"https://x/B"},
            {"title":"A (disambiguation)","index":3,"pageprops":{"disambiguation":""}},
            {"title":"A","index":1,"description":"first","canonicalurl":"https://x/A"}]}}"#;
        let (candidates, disambiguations) = parse_candidates(body).unwrap();
        assert_eq!(candidates.iter().map(|c| c.title.as_str()).collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(candidates[0].description, "first");
        assert_eq!(disambiguations, ["A (disambiguation)"]);
        assert_eq!(parse_candidates(br#"{"batchcomplete":true}"#).unwrap(), (vec![], vec![]));
    }
}
