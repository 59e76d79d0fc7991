//! Where characters' source texts come from besides pasted text (issue 13: Wikipedia, Baidu
//! Baike, any web page).
//!
//! - [`fetch`]: the guarded fetcher every web source goes through (SSRF guard, limits).
//! - [`page`]: bytes of a web page → text (charset detection) → its main content as Markdown.
//! - [`baike`]: Baidu Baike's lemma pages → Markdown, and their polysemant lists.
//! - [`wikipedia`]: the MediaWiki Action API.

pub mod baike;
pub mod fetch;
pub mod page;

use serde::{Deserialize, Serialize};

/// One entry a name may mean: what `GET /v1/sources/search` lists and a `409` offers when a
/// title is ambiguous. `id` picks the entry where the title alone does not (Baike's lemma id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Candidate {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub description: String,
    pub url: String,
}

pub mod search_cache;
pub mod wikipedia;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use url::Url;

use self::{
    fetch::{FetchError, FetchPolicy, Fetched},
    search_cache::SearchCache,
    wikipedia::Lookup,
};
use crate::{
    domain::{
        CharacterSource,
        source::{MAX_SOURCE_CHARS, MIN_SOURCE_CHARS},
    },
    settings::SourceSettings,
};

/// What a character was built from: the fetched document as Markdown, and where and when it was
/// found. Stored with the character (`GET /v1/characters/{id}` shows it) and in the fetch cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The document's address, after redirects (the article's canonical URL for Wikipedia).
    pub url: String,
    /// The title the source gave the document, if any.
    #[serde(default)]
    pub title: Option<String>,
    /// Wikipedia's revision id.
    #[serde(default)]
    pub revision: Option<String>,
    pub fetched_at: DateTime<Utc>,
    /// Bytes received.
    pub bytes: usize,
    /// Characters of [`Snapshot::markdown`].
    pub chars: usize,
    /// SHA-256 of [`Snapshot::markdown`], hex.
    pub sha256: String,
    /// `true` when the document was longer than [`MAX_SOURCE_CHARS`] and was cut there.
    #[serde(default)]
    pub truncated: bool,
    pub markdown: String,
}

impl Snapshot {
    fn new(url: String, title: Option<String>, revision: Option<String>, bytes: usize, markdown: String) -> Self {
        let (markdown, truncated) = match markdown.char_indices().nth(MAX_SOURCE_CHARS) {
            Some((cut, _)) => (markdown[..cut].to_owned(), true),
            None => (markdown, false),
        };
        Self {
            url,
            title,
            revision,
            fetched_at: Utc::now(),
            bytes,
            chars: markdown.chars().count(),
            sha256: format!("{:x}", Sha256::digest(markdown.as_bytes())),
            truncated,
            markdown,
        }
    }
}

/// Why a source gave no document. Each names the source, for the job's error message.
#[derive(Debug, thiserror::Error)]
pub enum SourceFailure {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{source_name} does not exist")]
    NotFound { source_name: String },
    #[error("{source_name} names several entries; choose one: {}", list(candidates))]
    Ambiguous { source_name: String, candidates: Vec<Candidate> },
    #[error("{source_name} holds {chars} characters of text; at least {MIN_SOURCE_CHARS} are needed")]
    TooShort { source_name: String, chars: usize },
    #[error("{source_name} answered something unreadable: {detail}")]
    Unreadable { source_name: String, detail: String },
}

fn list(candidates: &[Candidate]) -> String {
    let shown: Vec<String> = candidates
        .iter()
        .take(8)
        .map(|c| match &c.id {
            Some(id) => format!("{} [{}] ({id})", c.title, c.description),
            None if c.description.is_empty() => c.title.clone(),
            None => format!("{} [{}]", c.title, c.description),
        })
        .collect();
    shown.join("; ")
}

impl SourceFailure {
    /// The job error code it fails a generation with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Fetch(error) => error.code(),
            Self::NotFound { .. } => "source_not_found",
            Self::Ambiguous { .. } => "source_ambiguous",
            Self::TooShort { .. } => "source_too_short",
            Self::Unreadable { .. } => "source_unavailable",
        }
    }

    /// Whether trying again later may succeed, and how long the source asked to wait.
    pub fn retry(&self) -> Option<Option<Duration>> {
        match self {
            Self::Fetch(error) => error.retry(),
            _ => None,
        }
    }
}

/// Which encyclopedia a search asks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SearchIn {
    Wikipedia { lang: String },
    Baike,
}

/// The fetchers of every source kind, configured once per process and shared (cheap to clone).
#[derive(Clone)]
pub struct Sources {
    wikipedia_template: String,
    baike_origin: Url,
    /// For addresses users give (`url` sources): the SSRF guard applies.
    user_policy: FetchPolicy,
    /// For the operator's configured endpoints.
    endpoint_policy: FetchPolicy,
    search_cache: Option<Arc<dyn SearchCache>>,
    search_ttl: Duration,
    cache_ttl: Duration,
    fetch_tries: u32,
}

/// A setting names an endpoint that is not a URL.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {variable}: {reason}")]
pub struct EndpointError {
    pub variable: &'static str,
    pub reason: String,
}

impl Sources {
    /// `search_cache` keeps search and ambiguity answers a while (`None` where nothing searches).
    pub fn new(settings: &SourceSettings, search_cache: Option<Arc<dyn SearchCache>>) -> Result<Self, EndpointError> {
        wikipedia::endpoint(&settings.wikipedia_api_url, "en")
            .map_err(|error| EndpointError { variable: "FASTNPC_WIKIPEDIA_API_URL", reason: error.to_string() })?;
        let baike_origin = Url::parse(&settings.baike_url)
            .map_err(|error| EndpointError { variable: "FASTNPC_BAIKE_URL", reason: error.to_string() })?;
        let user_policy = FetchPolicy {
            allowed: settings.fetch_allowed.clone(),
            max_bytes: settings.fetch_max_bytes,
            timeout: settings.fetch_timeout,
            ..FetchPolicy::default()
        };
        let endpoint_policy = FetchPolicy { any_address: true, ..user_policy.clone() };
        Ok(Self {
            wikipedia_template: settings.wikipedia_api_url.clone(),
            baike_origin,
            user_policy,
            endpoint_policy,
            search_cache,
            search_ttl: settings.search_cache_ttl,
            cache_ttl: settings.cache_ttl,
            fetch_tries: settings.fetch_tries,
        })
    }

    /// Fetches of one document per job attempt (`FASTNPC_FETCH_TRIES`).
    pub fn fetch_tries(&self) -> u32 {
        self.fetch_tries
    }

    /// How long a fetched document may be reused (the store's fetch cache).
    pub fn cache_ttl(&self) -> Duration {
        self.cache_ttl
    }

    fn wikipedia_endpoint(&self, lang: &str) -> Result<Url, SourceFailure> {
        wikipedia::endpoint(&self.wikipedia_template, lang).map_err(|error| SourceFailure::Unreadable {
            source_name: format!("Wikipedia ({lang})"),
            detail: error.to_string(),
        })
    }

    /// The address a source's document is fetched from: the fetch cache's key (`None` for
    /// pasted text).
    pub fn document_url(&self, source: &CharacterSource) -> Option<String> {
        match source {
            CharacterSource::Text { .. } => None,
            CharacterSource::Wikipedia { lang, title } => {
                let endpoint = self.wikipedia_endpoint(lang).ok()?;
                Some(wikipedia::article_url(&endpoint, title.trim()).to_string())
            }
            CharacterSource::Baike { title, id } => {
                Some(baike::item_url(&self.baike_origin, title.trim(), id.as_deref()).to_string())
            }
            CharacterSource::Url { url } => Some(url.trim().to_owned()),
        }
    }

    /// Fetches a source's document (not cached here: the worker keeps fetched documents in the
    /// store). Fails `Ambiguous` for a title that names several entries: a job never picks one.
    pub async fn fetch(&self, source: &CharacterSource) -> Result<Snapshot, SourceFailure> {
        let source_name = source.describe();
        let snapshot = match source {
            CharacterSource::Text { text } => Snapshot::new(String::new(), None, None, text.len(), text.clone()),
            CharacterSource::Wikipedia { lang, title } => {
                let endpoint = self.wikipedia_endpoint(lang)?;
                let fetched =
                    fetch::fetch(&self.endpoint_policy, wikipedia::article_url(&endpoint, title.trim()).as_str())
                        .await?;
                let bytes = fetched.body.len();
                match blocking(move || wikipedia::parse_lookup(&fetched.body)).await {
                    Ok(Lookup::Article(article)) => Snapshot::new(
                        article.url,
                        Some(article.title),
                        article.revision.map(|r| r.to_string()),
                        bytes,
                        article.markdown,
                    ),
                    Ok(Lookup::Missing) => return Err(SourceFailure::NotFound { source_name }),
                    Ok(Lookup::Disambiguation { title }) => {
                        let candidates = self.wikipedia_links(&endpoint, &title).await?;
                        return Err(SourceFailure::Ambiguous { source_name, candidates });
                    }
                    Err(error) => return Err(SourceFailure::Unreadable { source_name, detail: error.to_string() }),
                }
            }
            CharacterSource::Baike { title, id } => {
                let item = self.baike_item(title.trim(), id.as_deref()).await?;
                let Some((fetched, item)) = item else {
                    return Err(SourceFailure::NotFound { source_name });
                };
                if id.is_none() && item.polysemants.len() > 1 {
                    return Err(SourceFailure::Ambiguous { source_name, candidates: item.polysemants });
                }
                Snapshot::new(fetched.url.to_string(), Some(item.title), item.id, fetched.body.len(), item.markdown)
            }
            CharacterSource::Url { url } => {
                let fetched = fetch::fetch(&self.user_policy, url.trim()).await?;
                let bytes = fetched.body.len();
                let address = fetched.url.to_string();
                let text = blocking(move || {
                    page::to_markdown(&fetched.body, fetched.charset.as_deref(), &fetched.media_type, &fetched.url)
                })
                .await;
                Snapshot::new(address, text.title, None, bytes, text.markdown)
            }
        };
        match snapshot.markdown.trim().chars().count() {
            chars if chars < MIN_SOURCE_CHARS => Err(SourceFailure::TooShort { source_name, chars }),
            _ => Ok(snapshot),
        }
    }

    /// A Baike lemma page and what it says, or `None` when Baike has no such lemma.
    async fn baike_item(
        &self,
        title: &str,
        id: Option<&str>,
    ) -> Result<Option<(Fetched, baike::BaikeItem)>, SourceFailure> {
        let url = baike::item_url(&self.baike_origin, title, id);
        let fetched = match fetch::fetch(&self.endpoint_policy, url.as_str()).await {
            Ok(fetched) => fetched,
            Err(FetchError::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let (fetched, parsed) = blocking(move || {
            let html = page::decode(&fetched.body, fetched.charset.as_deref(), &fetched.media_type);
            let parsed = baike::parse_item(&html, &fetched.url);
            (fetched, parsed)
        })
        .await;
        Ok(parsed.ok().map(|item| (fetched, item)))
    }

    async fn wikipedia_links(&self, endpoint: &Url, title: &str) -> Result<Vec<Candidate>, SourceFailure> {
        let fetched = fetch::fetch(&self.endpoint_policy, wikipedia::links_url(endpoint, title).as_str()).await?;
        let (candidates, _) = wikipedia::parse_candidates(&fetched.body).map_err(|error| {
            SourceFailure::Unreadable { source_name: format!("Wikipedia: {title}"), detail: error.to_string() }
        })?;
        Ok(candidates)
    }

    /// Entries a name may mean, best first (cached for a while).
    pub async fn search(&self, within: &SearchIn, text: &str) -> Result<Vec<Candidate>, SourceFailure> {
        let text = text.trim();
        let key = match within {
            SearchIn::Wikipedia { lang } => format!("search:wikipedia:{lang}:{text}"),
            SearchIn::Baike => format!("search:baike:{text}"),
        };
        self.cached(&key, async {
            match within {
                SearchIn::Wikipedia { lang } => self.search_wikipedia(lang, text).await,
                SearchIn::Baike => Ok(match self.baike_item(text, None).await? {
                    None => Vec::new(),
                    Some((_, item)) if item.polysemants.is_empty() => vec![Candidate {
                        url: baike::item_url(&self.baike_origin, &item.title, item.id.as_deref()).to_string(),
                        title: item.title,
                        id: item.id,
                        description: item.description.unwrap_or_default(),
                    }],
                    Some((_, item)) => item.polysemants,
                }),
            }
        })
        .await
    }

    async fn search_wikipedia(&self, lang: &str, text: &str) -> Result<Vec<Candidate>, SourceFailure> {
        let endpoint = self.wikipedia_endpoint(lang)?;
        let fetched = fetch::fetch(&self.endpoint_policy, wikipedia::search_url(&endpoint, text).as_str()).await?;
        let (mut candidates, disambiguations) = wikipedia::parse_candidates(&fetched.body).map_err(|error| {
            SourceFailure::Unreadable { source_name: format!("Wikipedia ({lang})"), detail: error.to_string() }
        })?;
        for title in disambiguations {
            for candidate in self.wikipedia_links(&endpoint, &title).await? {
                if !candidates.iter().any(|known| known.title == candidate.title) {
                    candidates.push(candidate);
                }
            }
        }
        candidates.truncate(wikipedia::CANDIDATE_LIMIT);
        Ok(candidates)
    }

    /// The entries an encyclopedia title may mean when it names more than one (the API answers
    /// `409` with them), or `None` when it names one (or none: the job reports that). A source
    /// that cannot be asked right now counts as unambiguous here; the job asks again and fails
    /// `source_ambiguous` rather than pick.
    pub async fn ambiguity(&self, source: &CharacterSource) -> Result<Option<Vec<Candidate>>, SourceFailure> {
        let candidates = match source {
            CharacterSource::Wikipedia { lang, title } => {
                let key = format!("ambiguity:wikipedia:{lang}:{}", title.trim());
                self.cached(&key, async {
                    let endpoint = self.wikipedia_endpoint(lang)?;
                    let probe =
                        fetch::fetch(&self.endpoint_policy, wikipedia::probe_url(&endpoint, title.trim()).as_str())
                            .await?;
                    match wikipedia::parse_lookup(&probe.body) {
                        Ok(Lookup::Disambiguation { title }) => self.wikipedia_links(&endpoint, &title).await,
                        _ => Ok(Vec::new()),
                    }
                })
                .await?
            }
            CharacterSource::Baike { title, id: None } => {
                let key = format!("ambiguity:baike:{}", title.trim());
                self.cached(&key, async {
                    Ok(self.baike_item(title.trim(), None).await?.map(|(_, item)| item.polysemants).unwrap_or_default())
                })
                .await?
            }
            _ => Vec::new(),
        };
        Ok((candidates.len() > 1).then_some(candidates))
    }

    async fn cached(
        &self,
        key: &str,
        compute: impl Future<Output = Result<Vec<Candidate>, SourceFailure>>,
    ) -> Result<Vec<Candidate>, SourceFailure> {
        let Some(cache) = &self.search_cache else { return compute.await };
        if let Some(hit) = cache.get(key).await
            && let Ok(candidates) = serde_json::from_str(&hit)
        {
            return Ok(candidates);
        }
        let candidates = compute.await?;
        if let Ok(value) = serde_json::to_string(&candidates) {
            cache.put(key, &value, self.search_ttl).await;
        }
        Ok(candidates)
    }
}

/// Parsing and converting documents is CPU work (an HTML page of megabytes takes milliseconds to
/// tens of them): off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}
