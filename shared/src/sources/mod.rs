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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub description: String,
    pub url: String,
}
