//! Baidu Baike (百度百科) lemma pages → [`BaikeItem`]: the lemma's title, 义项描述 and id, its text
//! as Markdown, and the polysemant list (多义词) a name with several meanings shows.
//!
//! Baike has no public content API, so this reads the lemma's HTML page. That page has been built
//! two ways over the years, and both can still be met (what Baike serves today, archived copies,
//! mirrors):
//!
//! - **Classic**, server-rendered, with readable, stable class names:
//!   `.lemmaWgt-lemmaTitle-title h1` and an `h2` subtitle `（唐代诗人）`, `.lemma-summary .para`,
//!   `.basic-info dt.basicInfo-item.name` / `dd.basicInfo-item.value`, `.para-title.level-2 h2` /
//!   `.level-3 h3` (with the lemma title repeated in a `span.title-prefix`), `div.para`,
//!   `ul.polysemantList-wrapper li.item` with a `span.selected` for the meaning shown, citations in
//!   `sup` plus an empty `a.sup-anchor`.
//! - **Current**, React with CSS modules: every class name carries a build hash that changes with
//!   each release (`lemmaSummary_cFhDf`, `basicInfo_tLQSv` with `itemName_…`/`itemValue_…`,
//!   `paraTitle_… level-1_…` around an `h2`, `level-2_…` around an `h3`, `para_…`,
//!   `#lemmaDesc .lemmaDescText_…`, the meanings in `newPolysemantList_…` as `contentItemChild_…`
//!   links, citations in `supWrap_…`). Only the part before the hash means anything, so current
//!   classes are matched by prefix (`[class*="lemmaSummary_"]`, or a class token starting with
//!   `para_`), never by full name; the few unhashed hooks (`J-lemma-title`, `J-summary`,
//!   `J-basic-info`, `J-lemma-content`, `data-tag`) are used too. When the list of meanings is not
//!   in the markup (the current page can draw it only when the "同名词条" toggle is clicked), it is
//!   read from the `window.PAGE_DATA` JSON the page embeds (`navigation.lemmas`).
//!
//! The class names were learned from public scrapers of Baike (the fixtures' README in
//! `tests/fixtures/sources/baike/` names them); Baike documents none of this, so every selector is
//! a best effort and the parser degrades to "not a lemma" rather than guessing from arbitrary HTML.
//!
//! Parsing builds a DOM of the whole page and walks it: CPU-bound (milliseconds to tens of
//! milliseconds for a long lemma), so async callers run [`parse_item`] on
//! `tokio::task::spawn_blocking`. Every walk here is iterative, so a hostile, deeply nested page
//! cannot overflow the stack.

use dom_query::{Document, NodeRef, Selection};
use url::Url;

use super::Candidate;

/// The path of a lemma page: `/item/<title, percent-encoded>` or `/item/<title>/<id>`.
///
/// The title is one path segment whatever it contains (`/`, `?`, `#`, `%` are encoded). A path
/// prefix of `base` is kept (`http://mirror/baike/` → `http://mirror/baike/item/…`); a base that
/// cannot hold a path (never an http(s) URL) is returned unchanged.
pub fn item_url(base: &url::Url, title: &str, id: Option<&str>) -> url::Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push("item").push(title);
        if let Some(id) = id {
            segments.push(id);
        }
    }
    url
}

/// A lemma page, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaikeItem {
    /// The lemma title (`李白`), without its 义项描述.
    pub title: String,
    /// The lemma's 义项描述 (`唐代诗人`), if the page shows one.
    pub description: Option<String>,
    /// The lemma id the page is about, when the page shows it (canonical link, the page's own
    /// URL, data attributes, `PAGE_DATA`).
    pub id: Option<String>,
    /// `# title`, the summary, a `## 基本信息` list (`- 中文名：李白`), then the sections (`##`,
    /// `###` headings and paragraphs, lists, tables); citation marks removed, whitespace
    /// normalised. Only `# title` for a bare disambiguation page (see [`parse_item`]).
    pub markdown: String,
    /// Every meaning of the title, the current one included, in page order; empty when the
    /// lemma has one meaning. URLs are absolute (joined to the page's URL, tracking query
    /// dropped); ids come from `/item/<title>/<id>`.
    pub polysemants: Vec<super::Candidate>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BaikeError {
    /// Baike's "lemma does not exist" page (or no lemma title/content found at all).
    #[error("Baidu Baike has no lemma here")]
    NotALemma,
}

/// Parses a lemma page fetched from `page_url` (the URL after redirects: relative links are
/// joined to it, and Baike's error page is recognised by it).
///
/// A page that names a title and lists its meanings but has no text of its own (Baike's
/// "本词条是一个多义词" disambiguation page) parses to an item with no id, no description, only
/// `# title` as Markdown and the meanings in `polysemants`: the caller offers those.
pub fn parse_item(html: &str, page_url: &url::Url) -> Result<BaikeItem, BaikeError> {
    if is_error_url(page_url) {
        return Err(BaikeError::NotALemma);
    }
    let doc = Document::from(html);
    let page_data = page_data(&doc);

    let summary = summary(&doc);
    let facts = basic_info(&doc);
    let blocks = body_blocks(&doc);
    let has_text = !summary.is_empty() || !facts.is_empty() || blocks.iter().any(Block::is_text);
    if !has_text && shows_missing_page(&doc) {
        return Err(BaikeError::NotALemma);
    }

    let head = lemma_heading(&doc);
    let title_tag = title_tag(&doc);
    let title = head
        .as_ref()
        .map(|(title, _)| title.clone())
        .or_else(|| json_string(page_data.as_ref(), "lemmaTitle"))
        .or_else(|| title_tag.as_ref().map(|(title, _)| title.clone()))
        .ok_or(BaikeError::NotALemma)?;

    // A page without text of its own is no lemma, whatever id or description it carries.
    let id = if has_text { page_id(&doc, page_url, page_data.as_ref()) } else { None };
    let meanings = meanings(&doc, page_url, page_data.as_ref(), id.as_deref());
    let description = lemma_description(&doc)
        .or_else(|| head.and_then(|(_, subtitle)| subtitle))
        .or_else(|| json_string(page_data.as_ref(), "lemmaDesc"))
        .or_else(|| meanings.iter().find(|meaning| meaning.current).map(|meaning| meaning.description.clone()))
        .or_else(|| title_tag.and_then(|(_, description)| description))
        .filter(|description| has_text && !description.is_empty());

    let polysemants = candidates(meanings, page_url, &title, id.as_deref(), description.as_deref(), has_text);
    if !has_text && polysemants.is_empty() {
        return Err(BaikeError::NotALemma);
    }
    let markdown = markdown(&title, &summary, &facts, &blocks);
    Ok(BaikeItem { title, description, id, markdown, polysemants })
}

// ---------------------------------------------------------------------------------------------
// Recognising the page

/// Baike answers a missing lemma with a redirect to its error page.
fn is_error_url(url: &Url) -> bool {
    let path = url.path();
    path.ends_with("/error.html") || path.ends_with("/error.htm")
}

/// The texts of Baike's "no such lemma" answers: the error page ("抱歉，您所访问的页面不存在",
/// classic `p.sorryCont > span.sorryTxt`) and the search page that says a title was never written.
const MISSING_MARKERS: [&str; 2] = ["您所访问的页面不存在", "百度百科尚未收录词条"];

fn shows_missing_page(doc: &Document) -> bool {
    doc.try_select(".sorryCont, .sorryTxt").is_some()
        || doc.body().is_some_and(|body| {
            let text = body.text();
            MISSING_MARKERS.iter().any(|marker| text.contains(marker))
        })
}

/// The lemma title and, on classic pages, the subtitle `（唐代诗人）` as a description.
fn lemma_heading(doc: &Document) -> Option<(String, Option<String>)> {
    // The classic `.J-lemma-title` is the `dd` around `h1` and `h2`; the current one is the `h1`.
    const TITLES: [&str; 4] =
        [".lemmaWgt-lemmaTitle-title h1", "h1[class*=\"lemmaTitle_\"]", "h1.J-lemma-title", ".J-lemma-title h1"];
    let title = TITLES.iter().find_map(|selector| first(doc, selector)).map(|h1| one_line(h1))?;
    if title.is_empty() {
        return None;
    }
    let subtitle = first(doc, ".lemmaWgt-lemmaTitle-title h2")
        .map(|h2| strip_brackets(&one_line(h2)).to_owned())
        .filter(|subtitle| !subtitle.is_empty());
    Some((title, subtitle))
}

/// The current markup's 义项描述 line under the title (`#lemmaDesc`), which also holds the
/// "同名词条(3)" toggle that is not part of it.
fn lemma_description(doc: &Document) -> Option<String> {
    const DESCRIPTIONS: [&str; 4] =
        ["#lemmaDesc [class*=\"lemmaDescText_\"]", "[class*=\"lemmaDescText_\"]", ".lemma-desc", ".lemmaDesc"];
    DESCRIPTIONS
        .iter()
        .filter_map(|selector| first(doc, selector))
        .map(|node| one_line(node))
        .find(|text| !text.is_empty() && !text.contains("同名词条"))
}

/// `<title>李白（唐代诗人）_百度百科</title>` → (`李白`, `唐代诗人`): the last resort for a lemma page
/// whose title markup changed again.
fn title_tag(doc: &Document) -> Option<(String, Option<String>)> {
    let text = first(doc, "title").map(|title| one_line(title))?;
    let name = text.strip_suffix("_百度百科")?.trim();
    let (title, description) = match name.strip_suffix('）').or_else(|| name.strip_suffix(')')) {
        Some(open) => match open.rfind(['（', '(']) {
            Some(at) => {
                let description = open[at..].trim_start_matches(['（', '(']).trim();
                (open[..at].trim(), Some(description.to_owned()).filter(|d| !d.is_empty()))
            }
            None => (name, None),
        },
        None => (name, None),
    };
    Some((title.to_owned(), description)).filter(|(title, _)| !title.is_empty())
}

/// The id of the lemma the page shows.
fn page_id(doc: &Document, page_url: &Url, page_data: Option<&serde_json::Value>) -> Option<String> {
    let from_link = |selector: &str, attribute: &str| {
        first(doc, selector)
            .and_then(|node| node.attr(attribute))
            .and_then(|href| page_url.join(href.trim()).ok())
            .and_then(|url| item_path(&url))
            .and_then(|(_, id)| id)
    };
    from_link("link[rel=\"canonical\"]", "href")
        .or_else(|| from_link("meta[property=\"og:url\"]", "content"))
        .or_else(|| item_path(page_url).and_then(|(_, id)| id))
        // Links to other lemmas carry `data-lemmaid` too; the page's own is on a non-link
        // element (the classic `.lemmaWgt-promotion-rightPreciseAd`).
        .or_else(|| {
            doc.try_select("[data-lemmaid]")?
                .nodes()
                .iter()
                .copied()
                .filter(|node| !node.has_name("a"))
                .find_map(|node| node.attr("data-lemmaid").map(|id| id.trim().to_owned()))
                .filter(|id| is_lemma_id(id))
        })
        .or_else(|| page_data.and_then(|data| json_id(data.get("lemmaId"))))
}

// ---------------------------------------------------------------------------------------------
// Summary, basic information, sections

fn summary(doc: &Document) -> Vec<String> {
    const SUMMARIES: [&str; 4] =
        [".lemma-summary", "[class*=\"lemmaSummary_\"]", ".J-summary", ".lemmaWgt-lemmaSummary"];
    let Some(container) = SUMMARIES.iter().find_map(|selector| first(doc, selector)) else {
        return Vec::new();
    };
    let mut paragraphs = Vec::new();
    let mut stack: Vec<NodeRef<'_>> = container.children_it(true).collect();
    while let Some(node) = stack.pop() {
        if !node.is_element() || is_noise(&node) {
            continue;
        }
        if is_paragraph(&node) {
            paragraphs.push(text_lines(node).join("\n"));
        } else {
            stack.extend(node.children_it(true));
        }
    }
    paragraphs.retain(|paragraph| !paragraph.is_empty());
    if paragraphs.is_empty() {
        paragraphs = text_lines(container);
    }
    paragraphs
}

/// The infobox's name/value pairs, names without the padding Baike puts in short ones (`别  名`).
fn basic_info(doc: &Document) -> Vec<(String, String)> {
    const BOXES: [&str; 4] = [".basic-info", "[class*=\"basicInfo_\"]", ".J-basic-info", ".lemmaWgt-basicInfo"];
    let Some(container) = BOXES.iter().find_map(|selector| first(doc, selector)) else {
        return Vec::new();
    };
    let Some(names) = Selection::from(container).try_select("dt") else {
        return Vec::new();
    };
    names
        .nodes()
        .iter()
        .copied()
        .filter_map(|dt| {
            let name: String = text_lines(dt).concat().chars().filter(|c| !c.is_whitespace()).collect();
            let name = name.trim_end_matches(['：', ':']).to_owned();
            // Classic pairs are siblings in one `dl`; current ones share an `itemWrapper_` div.
            let dd = std::iter::successors(dt.next_element_sibling(), NodeRef::next_element_sibling)
                .take_while(|node| !node.has_name("dt"))
                .find(|node| node.has_name("dd"))?;
            let value = join_list(text_lines(dd));
            (!name.is_empty() && !value.is_empty()).then_some((name, value))
        })
        .collect()
}

#[derive(Debug)]
enum Block {
    /// A heading at Markdown level 2 (`##`) or deeper.
    Heading(usize, String),
    Paragraph(String),
    /// A list item with its marker (`-`, `1.`).
    Item(String, String),
    /// Rows of cells, the first row the header.
    Table(Vec<Vec<String>>),
}

impl Block {
    fn is_text(&self) -> bool {
        !matches!(self, Self::Heading(..))
    }
}

/// The lemma's sections in page order.
fn body_blocks(doc: &Document) -> Vec<Block> {
    const ROOTS: [&str; 5] =
        [".J-lemma-content", "[class*=\"mainContent_\"]", ".main-content", ".lemma-main-content", "body"];
    let Some(root) = ROOTS.iter().find_map(|selector| first(doc, selector)) else {
        return Vec::new();
    };
    let mut blocks = Vec::new();
    let mut stack: Vec<NodeRef<'_>> = root.children_it(true).collect();
    while let Some(node) = stack.pop() {
        // Loose text between blocks is page furniture ("展开", counters), never lemma text.
        if !node.is_element() || is_noise(&node) || is_aside(&node) {
            continue;
        }
        if let Some(level) = heading_level(&node) {
            let heading = heading_text(node);
            if !heading.is_empty() {
                blocks.push(Block::Heading(level, heading));
            }
        } else if is_paragraph(&node) {
            let text = text_lines(node).join("\n");
            if !text.is_empty() {
                blocks.push(Block::Paragraph(text));
            }
        } else if node.has_name("table") {
            let rows = table_rows(node);
            if !rows.is_empty() {
                blocks.push(Block::Table(rows));
            }
        } else if is_content_list(&node) {
            let ordered = node.has_name("ol");
            let items = node.element_children().into_iter().filter(|child| child.has_name("li"));
            for (index, item) in items.enumerate() {
                let text = text_lines(item).join(" ");
                if !text.is_empty() {
                    let marker = if ordered { format!("{}.", index + 1) } else { "-".to_owned() };
                    blocks.push(Block::Item(marker, text));
                }
            }
        } else {
            stack.extend(node.children_it(true));
        }
    }
    blocks
}

/// Markdown level of a section heading, from the `h2`–`h6` it wraps: the classic `level-2`
/// wraps an `h2` and the current `level-1_…` wraps an `h2` too, so the class number alone would
/// put the two eras one level apart.
fn heading_level(node: &NodeRef<'_>) -> Option<usize> {
    let classic = has_token(node, "para-title");
    let current = has_token_prefix(node, "paraTitle_");
    let tagged =
        node.has_attr("data-level") && node.attr("data-tag").is_some_and(|tag| !matches!(&*tag, "paragraph" | "ref"));
    if !(classic || current || tagged) {
        return None;
    }
    let from_tag = Selection::from(*node)
        .try_select("h2, h3, h4, h5, h6")
        .and_then(|headings| headings.nodes().first().and_then(|h| h.node_name()))
        .and_then(|name| name[1..].parse::<usize>().ok());
    let from_class = node.class().and_then(|class| {
        class.split_ascii_whitespace().find_map(|token| {
            let digits: String = token.strip_prefix("level-")?.chars().take_while(char::is_ascii_digit).collect();
            let level = digits.parse::<usize>().ok()?;
            Some(if classic { level } else { level + 1 })
        })
    });
    let from_attribute = node.attr("data-level").and_then(|level| level.trim().parse::<usize>().ok()).map(|l| l + 1);
    Some(from_tag.or(from_class).or(from_attribute).unwrap_or(2).clamp(2, 6))
}

fn heading_text(node: NodeRef<'_>) -> String {
    let inner = Selection::from(node).try_select("h2, h3, h4, h5, h6").and_then(|h| h.nodes().first().copied());
    let mut text = one_line(inner.unwrap_or(node));
    // The current markup puts its read-aloud and edit buttons next to the heading; they end up
    // in the text when a heading has no `h*` of its own.
    while let Some(rest) = ["播报", "编辑", "收起", "展开"].iter().find_map(|button| text.strip_suffix(button))
    {
        text = rest.trim_end().to_owned();
    }
    text.trim_start_matches('▪').trim().to_owned()
}

fn is_paragraph(node: &NodeRef<'_>) -> bool {
    has_token(node, "para")
        || has_token_prefix(node, "para_")
        || node.attr("data-tag").is_some_and(|tag| &*tag == "paragraph")
}

/// A `ul`/`ol` of lemma text (not navigation): classic `para-list`, current `unordered_…` /
/// `ordered_…`, or any list whose items hold paragraphs.
fn is_content_list(node: &NodeRef<'_>) -> bool {
    (node.has_name("ul") || node.has_name("ol"))
        && (has_token(node, "para-list")
            || has_token_prefix(node, "unordered_")
            || has_token_prefix(node, "ordered_")
            || Selection::from(*node).try_select(".para, [class^=\"para_\"], [class*=\" para_\"]").is_some())
}

fn table_rows(table: NodeRef<'_>) -> Vec<Vec<String>> {
    let Some(rows) = Selection::from(table).try_select("tr") else {
        return Vec::new();
    };
    rows.nodes()
        .iter()
        .copied()
        .map(|row| {
            row.element_children()
                .into_iter()
                .filter(|cell| cell.has_name("td") || cell.has_name("th"))
                .map(|cell| text_lines(cell).join(" ").replace('|', "｜"))
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells.iter().any(|cell| !cell.is_empty()))
        .collect()
}

/// Parts of the page that are not sections: the summary and infobox (rendered on their own), the
/// title block, meanings, table of contents, references, albums, side bars.
fn is_aside(node: &NodeRef<'_>) -> bool {
    const CLASSES: [&str; 14] = [
        "lemma-summary",
        "J-summary",
        "basic-info",
        "J-basic-info",
        "lemmaWgt-lemmaTitle",
        "J-lemma-title",
        "lemmaWgt-lemmaCatalog",
        "lemma-reference",
        "lemma-album",
        "polysemant-list",
        "polysemantList-wrapper",
        "lemmaWgt-subLemmaListTitle",
        "top-tool",
        "side-content",
    ];
    const PREFIXES: [&str; 12] = [
        "lemmaSummary_",
        "basicInfo_",
        "lemmaTitle",
        "lemmaDesc",
        "polysemant",
        "newPolysemantList_",
        "lemmaPolysemant",
        "catalog",
        "lemmaReference_",
        "reference",
        "album",
        "sideContent_",
    ];
    matches!(node.node_name().as_deref(), Some("header" | "footer" | "nav" | "aside" | "form"))
        || node.id_attr().is_some_and(|id| matches!(&*id, "lemmaDesc" | "newPolysemantList"))
        || node.class().is_some_and(|class| {
            class
                .split_ascii_whitespace()
                .any(|token| CLASSES.contains(&token) || PREFIXES.iter().any(|prefix| token.starts_with(prefix)))
        })
}

// ---------------------------------------------------------------------------------------------
// Meanings (polysemants)

/// One entry of a polysemant list, before the current one is completed from the page.
#[derive(Debug)]
struct Meaning {
    title: Option<String>,
    id: Option<String>,
    description: String,
    url: Option<Url>,
    current: bool,
}

fn meanings(doc: &Document, page_url: &Url, page_data: Option<&serde_json::Value>, id: Option<&str>) -> Vec<Meaning> {
    let mut found = classic_meanings(doc, page_url);
    if found.is_empty() {
        found = current_meanings(doc, page_url);
    }
    if found.is_empty() {
        found = disambiguation_meanings(doc, page_url);
    }
    if found.is_empty() {
        found = page_data_meanings(page_data);
    }
    for meaning in &mut found {
        meaning.current |= id.is_some() && meaning.id.as_deref() == id;
        if meaning.current && meaning.id.is_none() {
            meaning.id = id.map(str::to_owned);
        }
        meaning.description = meaning.description.trim_start_matches('▪').trim().to_owned();
    }
    let mut seen = std::collections::HashSet::new();
    found.retain(|meaning| {
        let key = match (&meaning.id, &meaning.url, meaning.current) {
            (Some(id), ..) => format!("id {id}"),
            (None, _, true) => "current".to_owned(),
            (None, Some(url), false) => url.to_string(),
            (None, None, false) => return false,
        };
        seen.insert(key)
    });
    found
}

/// `ul.polysemantList-wrapper > li.item`: a link per other meaning, a `span.selected` for this one.
fn classic_meanings(doc: &Document, page_url: &Url) -> Vec<Meaning> {
    let Some(items) = doc.try_select(".polysemantList-wrapper li") else {
        return Vec::new();
    };
    items
        .nodes()
        .iter()
        .copied()
        .map(|item| {
            let link = Selection::from(item).try_select("a[href]").and_then(|links| links.nodes().first().copied());
            match link {
                Some(link) => {
                    let text = one_line(link);
                    let text =
                        if text.is_empty() { link.attr("title").map(|t| t.trim().to_owned()) } else { Some(text) };
                    linked_meaning(page_url, &link, text.unwrap_or_default())
                }
                None => current_meaning(one_line(item)),
            }
        })
        .collect()
}

/// `newPolysemantList_…`: `a.contentItemChild_…` per other meaning; this one is the
/// `contentItemChild_…` that is not a link (or is marked selected).
fn current_meanings(doc: &Document, page_url: &Url) -> Vec<Meaning> {
    const LISTS: [&str; 4] = [
        "[class*=\"newPolysemantList_\"]",
        "#newPolysemantList",
        "[class*=\"polysemantList_\"]",
        "[class*=\"lemmaPolysemant\"]",
    ];
    let Some(list) = LISTS.iter().find_map(|selector| first(doc, selector)) else {
        return Vec::new();
    };
    let children: Vec<NodeRef<'_>> = Selection::from(list)
        .try_select("[class*=\"contentItemChild_\"]")
        .map(|nodes| nodes.nodes().iter().copied().filter(|node| has_token_prefix(node, "contentItemChild_")).collect())
        .unwrap_or_default();
    if children.is_empty() {
        return Selection::from(list)
            .try_select("a[href*=\"/item/\"]")
            .map(|links| {
                links.nodes().iter().copied().map(|link| linked_meaning(page_url, &link, one_line(link))).collect()
            })
            .unwrap_or_default();
    }
    children.into_iter().map(|child| child_meaning(page_url, child)).collect()
}

fn child_meaning(page_url: &Url, child: NodeRef<'_>) -> Meaning {
    let text = Selection::from(child)
        .try_select("[class*=\"contentItemChildText_\"]")
        .and_then(|texts| texts.nodes().first().copied())
        .map_or_else(|| one_line(child), |text| one_line(text));
    let selected = ["selected", "active", "current", "cur"]
        .iter()
        .any(|mark| has_token(&child, mark) || has_token_prefix(&child, &format!("{mark}_")));
    match child.attr("href") {
        Some(_) if !selected => linked_meaning(page_url, &child, text),
        _ => current_meaning(text),
    }
}

/// A page that is only a list of meanings: current markup's bare `contentItemChild_` links, or
/// the classic "本词条是一个多义词" list of `标题：描述` links.
fn disambiguation_meanings(doc: &Document, page_url: &Url) -> Vec<Meaning> {
    if let Some(children) = doc.try_select("a[class*=\"contentItemChild_\"]") {
        return children.nodes().iter().copied().map(|child| child_meaning(page_url, child)).collect();
    }
    if doc.try_select(".lemmaWgt-subLemmaListTitle").is_none() {
        return Vec::new();
    }
    let Some(links) = doc.try_select(".para-list a[href*=\"/item/\"], .para a[href*=\"/item/\"]") else {
        return Vec::new();
    };
    links
        .nodes()
        .iter()
        .copied()
        .map(|link| {
            let text = one_line(link);
            let description = match text.split_once(['：', ':']) {
                Some((_, description)) => description.trim().to_owned(),
                None => text,
            };
            linked_meaning(page_url, &link, description)
        })
        .collect()
}

/// `window.PAGE_DATA.navigation.lemmas`: what the current markup draws its list from.
fn page_data_meanings(page_data: Option<&serde_json::Value>) -> Vec<Meaning> {
    let Some(lemmas) = page_data.and_then(|data| data.pointer("/navigation/lemmas")).and_then(|l| l.as_array()) else {
        return Vec::new();
    };
    lemmas
        .iter()
        .filter_map(|lemma| {
            let id = json_id(lemma.get("lemmaId"))?;
            let description = lemma.get("lemmaDesc").and_then(|d| d.as_str()).map(clean_line).unwrap_or_default();
            let title = lemma.get("lemmaTitle").and_then(|t| t.as_str()).map(clean_line).filter(|t| !t.is_empty());
            Some(Meaning { title, id: Some(id), description, url: None, current: false })
        })
        .collect()
}

fn linked_meaning(page_url: &Url, link: &NodeRef<'_>, description: String) -> Meaning {
    let target = link.attr("href").and_then(|href| page_url.join(href.trim()).ok()).and_then(|mut url| {
        url.set_query(None);
        url.set_fragment(None);
        let (title, id) = item_path(&url)?;
        Some((url, title, id))
    });
    match target {
        Some((url, title, id)) => Meaning { title: Some(title), id, description, url: Some(url), current: false },
        None => Meaning { title: None, id: None, description, url: None, current: false },
    }
}

fn current_meaning(description: String) -> Meaning {
    Meaning { title: None, id: None, description, url: None, current: true }
}

/// Completes the meanings into candidates: the current one gets the page's title, id and URL, and
/// is added first when the list left it out, so the list holds every meaning. A list of one
/// meaning offers no choice and comes out empty.
fn candidates(
    mut meanings: Vec<Meaning>,
    page_url: &Url,
    title: &str,
    id: Option<&str>,
    description: Option<&str>,
    is_lemma: bool,
) -> Vec<Candidate> {
    if meanings.is_empty() {
        return Vec::new();
    }
    if is_lemma && !meanings.iter().any(|meaning| meaning.current) {
        meanings.insert(0, current_meaning(description.unwrap_or_default().to_owned()));
    }
    let candidates: Vec<Candidate> = meanings
        .into_iter()
        .filter(|meaning| is_lemma || !meaning.current)
        .map(|meaning| {
            let (meaning_title, meaning_id) = if meaning.current {
                (title.to_owned(), meaning.id.or_else(|| id.map(str::to_owned)))
            } else {
                (meaning.title.unwrap_or_else(|| title.to_owned()), meaning.id)
            };
            let url = match meaning.url {
                Some(url) => url.to_string(),
                None => lemma_url(page_url, &meaning_title, meaning_id.as_deref()),
            };
            let description = match (meaning.current, meaning.description.is_empty(), description) {
                (true, true, Some(description)) => description.to_owned(),
                _ => meaning.description,
            };
            Candidate { title: meaning_title, id: meaning_id, description, url }
        })
        .collect();
    if candidates.len() < 2 { Vec::new() } else { candidates }
}

/// A lemma's URL on the site the page came from: what precedes the page's `/item/` segment is
/// kept (a mirror's or fixture server's prefix).
fn lemma_url(page_url: &Url, title: &str, id: Option<&str>) -> String {
    let mut base = page_url.clone();
    let prefix = page_url.path_segments().map(|segments| {
        let segments: Vec<&str> = segments.collect();
        let end = segments.iter().position(|segment| *segment == "item").unwrap_or(0);
        segments[..end].join("/")
    });
    base.set_path(&prefix.unwrap_or_default());
    item_url(&base, title, id).to_string()
}

/// `(title, id)` of a `…/item/<title>[/<id>]` URL.
fn item_path(url: &Url) -> Option<(String, Option<String>)> {
    let segments: Vec<&str> = url.path_segments()?.collect();
    let at = segments.iter().position(|segment| *segment == "item")?;
    let title = percent_decode(segments.get(at + 1)?);
    let id = segments.get(at + 2).filter(|id| is_lemma_id(id)).map(|id| (*id).to_owned());
    (!title.trim().is_empty()).then_some((title, id))
}

fn is_lemma_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.bytes().all(|byte| byte.is_ascii_digit())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = |byte: u8| char::from(byte).to_digit(16);
        match (bytes[at], bytes.get(at + 1).copied().and_then(hex), bytes.get(at + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                at += 3;
            }
            (byte, ..) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// window.PAGE_DATA

/// The JSON object a current-markup page assigns to `window.PAGE_DATA` in a script, if any.
fn page_data(doc: &Document) -> Option<serde_json::Value> {
    doc.try_select("script")?.nodes().iter().copied().find_map(|script| {
        let text = script.text();
        let at = text.find("PAGE_DATA")?;
        let rest = text[at + "PAGE_DATA".len()..].trim_start().strip_prefix('=')?.trim_start();
        let end = object_end(rest)?;
        serde_json::from_str(&rest[..end]).ok()
    })
}

/// The length of the `{…}` object `text` starts with, strings (and braces in them) skipped.
fn object_end(text: &str) -> Option<usize> {
    if !text.starts_with('{') {
        return None;
    }
    let (mut depth, mut quote, mut escaped) = (0usize, None, false);
    for (at, byte) in text.bytes().enumerate() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if byte == b'\\' => escaped = true,
            Some(open) if byte == open => quote = None,
            Some(_) => {}
            None => match byte {
                b'"' | b'\'' => quote = Some(byte),
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(at + 1);
                    }
                }
                _ => {}
            },
        }
    }
    None
}

fn json_string(data: Option<&serde_json::Value>, key: &str) -> Option<String> {
    data?.get(key)?.as_str().map(clean_line).filter(|text| !text.is_empty())
}

fn json_id(value: Option<&serde_json::Value>) -> Option<String> {
    let id = match value? {
        serde_json::Value::Number(number) => number.to_string(),
        serde_json::Value::String(text) => text.trim().to_owned(),
        _ => return None,
    };
    is_lemma_id(&id).then_some(id)
}

// ---------------------------------------------------------------------------------------------
// Text

/// Citations and controls inside text: never part of the lemma's prose.
fn is_noise(node: &NodeRef<'_>) -> bool {
    const TAGS: [&str; 13] = [
        "script", "style", "noscript", "template", "sup", "svg", "button", "input", "select", "textarea", "iframe",
        "object", "head",
    ];
    const CLASSES: [&str; 7] =
        ["sup-anchor", "J-supWrap", "title-prefix", "edit-icon", "edit-lemma", "lock-lemma", "j-edit-link"];
    node.node_name().is_some_and(|name| TAGS.contains(&&*name))
        || node.attr("data-tag").is_some_and(|tag| &*tag == "ref")
        || node.class().is_some_and(|class| {
            class.split_ascii_whitespace().any(|token| CLASSES.contains(&token) || token.starts_with("supWrap_"))
        })
}

/// The text of `node` as clean lines: `<br>` and block boundaries break lines, the source's
/// whitespace is collapsed, citations and controls ([`is_noise`]) are left out.
fn text_lines(node: NodeRef<'_>) -> Vec<String> {
    const BLOCKS: [&str; 22] = [
        "p",
        "div",
        "li",
        "dd",
        "dt",
        "dl",
        "tr",
        "td",
        "th",
        "ul",
        "ol",
        "table",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "section",
        "article",
        "blockquote",
        "pre",
    ];
    enum Step<'a> {
        Visit(NodeRef<'a>),
        Break,
    }
    let mut raw = String::new();
    let mut stack: Vec<Step<'_>> = node.children_it(true).map(Step::Visit).collect();
    while let Some(step) = stack.pop() {
        let node = match step {
            Step::Break => {
                raw.push('\n');
                continue;
            }
            Step::Visit(node) => node,
        };
        if node.is_text() {
            // Line breaks in the source are layout, not text: only `<br>` and blocks break lines.
            raw.extend(node.text().chars().map(|c| if matches!(c, '\n' | '\r') { ' ' } else { c }));
            continue;
        }
        if !node.is_element() || is_noise(&node) {
            continue;
        }
        let name = node.node_name();
        let name = name.as_deref().unwrap_or_default();
        if name == "br" {
            raw.push('\n');
            continue;
        }
        if BLOCKS.contains(&name) {
            raw.push('\n');
            stack.push(Step::Break);
        }
        stack.extend(node.children_it(true).map(Step::Visit));
    }
    raw.lines().map(clean_line).filter(|line| !line.is_empty()).collect()
}

/// `text_lines` on one line (titles, headings).
fn one_line(node: NodeRef<'_>) -> String {
    clean_line(&text_lines(node).join(" "))
}

/// Collapses whitespace (the non-breaking and ideographic spaces Baike pads with included),
/// drops a space between two CJK characters (it only came from line breaks in the source),
/// and removes citation marks.
fn clean_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut space = false;
    for c in strip_citations(line).chars() {
        if matches!(c, '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{feff}') {
            continue;
        }
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if std::mem::take(&mut space) && out.chars().next_back().is_some_and(|before| !(is_cjk(before) && is_cjk(c))) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// CJK ideographs, kana, hangul, and the full-width punctuation that sits between them.
fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{2e80}'..='\u{2fdf}'
        | '\u{3000}'..='\u{30ff}'
        | '\u{3100}'..='\u{9fff}'
        | '\u{ac00}'..='\u{d7af}'
        | '\u{f900}'..='\u{faff}'
        | '\u{fe30}'..='\u{fe4f}'
        | '\u{ff00}'..='\u{ffef}'
        | '\u{2018}'..='\u{201f}'
        | '\u{2026}'
        | '\u{20000}'..='\u{3134f}')
}

/// Removes citation marks: `[1]`, `[2-3]`, `[4,5]`, full-width brackets too.
fn strip_citations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['[', '［']) {
        out.push_str(&rest[..at]);
        let open = rest[at..].chars().next().map_or(1, char::len_utf8);
        let inner = &rest[at + open..];
        // Citations are short; looking no further keeps `[[[[…` linear.
        let end = inner.char_indices().take(32).find(|(_, c)| matches!(c, ']' | '］')).map(|(end, _)| end);
        let is_citation = end.is_some_and(|end| {
            let mark = &inner[..end];
            mark.chars().any(|c| c.is_ascii_digit())
                && mark.chars().all(|c| c.is_ascii_digit() || matches!(c, '-' | '–' | '—' | ',' | '，' | '、' | ' '))
        });
        match end {
            Some(end) if is_citation => {
                // `poet [12].` → `poet.`: the space belonged to the mark.
                out.truncate(out.trim_end().len());
                let close = inner[end..].chars().next().map_or(1, char::len_utf8);
                rest = &inner[end + close..];
            }
            _ => {
                out.push_str(&rest[at..at + open]);
                rest = inner;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `（唐代诗人）` → `唐代诗人`.
fn strip_brackets(text: &str) -> &str {
    text.trim().trim_start_matches(['（', '(']).trim_end_matches(['）', ')']).trim()
}

/// Lines of a value (`李太白<br>李翰林`) as one: `李太白、李翰林`.
fn join_list(lines: Vec<String>) -> String {
    let mut out = String::new();
    for line in lines {
        if !out.is_empty() && !out.ends_with(['、', '，', ',', '；', ';', '。']) {
            out.push('、');
        }
        out.push_str(&line);
    }
    out
}

fn has_token(node: &NodeRef<'_>, token: &str) -> bool {
    node.class().is_some_and(|class| class.split_ascii_whitespace().any(|t| t == token))
}

fn has_token_prefix(node: &NodeRef<'_>, prefix: &str) -> bool {
    node.class().is_some_and(|class| class.split_ascii_whitespace().any(|t| t.starts_with(prefix)))
}

fn first<'a>(doc: &'a Document, selector: &str) -> Option<NodeRef<'a>> {
    doc.try_select(selector).and_then(|found| found.nodes().first().copied())
}

// ---------------------------------------------------------------------------------------------
// Markdown

fn markdown(title: &str, summary: &[String], facts: &[(String, String)], blocks: &[Block]) -> String {
    let mut out = format!("# {title}\n\n");
    for paragraph in summary {
        out.push_str(paragraph);
        out.push_str("\n\n");
    }
    if !facts.is_empty() {
        out.push_str("## 基本信息\n\n");
        for (name, value) in facts {
            out.push_str(&format!("- {name}：{value}\n"));
        }
        out.push('\n');
    }
    for (at, block) in blocks.iter().enumerate() {
        match block {
            Block::Heading(level, text) => {
                out.push_str(&format!("{} {text}\n\n", "#".repeat(*level)));
            }
            Block::Paragraph(text) => {
                out.push_str(text);
                out.push_str("\n\n");
            }
            Block::Item(marker, text) => {
                out.push_str(&format!("{marker} {text}\n"));
                if !matches!(blocks.get(at + 1), Some(Block::Item(..))) {
                    out.push('\n');
                }
            }
            Block::Table(rows) => {
                let width = rows.iter().map(Vec::len).max().unwrap_or(0);
                for (index, row) in rows.iter().enumerate() {
                    let cells: Vec<&str> =
                        (0..width).map(|column| row.get(column).map_or("", String::as_str)).collect();
                    out.push_str(&format!("| {} |\n", cells.join(" | ")));
                    if index == 0 {
                        out.push_str(&format!("|{}\n", " --- |".repeat(width)));
                    }
                }
                out.push('\n');
            }
        }
    }
    let mut markdown = out.trim_end().to_owned();
    markdown.push('\n');
    markdown
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBAI: &str = include_str!("../../../tests/fixtures/sources/baike/libai.html");
    const LIBAI_SONG: &str = include_str!("../../../tests/fixtures/sources/baike/libai-song.html");
    const ZHUGELIANG: &str = include_str!("../../../tests/fixtures/sources/baike/zhugeliang.html");
    const NOT_FOUND: &str = include_str!("../../../tests/fixtures/sources/baike/not-found.html");

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn libai() -> BaikeItem {
        parse_item(LIBAI, &url("https://baike.baidu.com/item/%E6%9D%8E%E7%99%BD/1043")).unwrap()
    }

    fn zhugeliang() -> BaikeItem {
        // Without an id in the URL: the classic page's data attribute must give it.
        parse_item(ZHUGELIANG, &url("https://baike.baidu.com/item/%E8%AF%B8%E8%91%9B%E4%BA%AE")).unwrap()
    }

    /// Chrome strings of the fixtures' headers, footers, buttons, ads and scripts.
    const CHROME: [&str; 22] = [
        "百度百科合作平台",
        "京ICP",
        "使用百度前必读",
        "进入词条",
        "全站搜索",
        "秒懂",
        "特色百科",
        "参考资料",
        "目录",
        "播报",
        "编辑",
        "锁定",
        "收藏",
        "广告",
        "精选好课",
        "浏览次数",
        "相关搜索",
        "同名词条",
        "PAGE_DATA",
        "window",
        "不应出现",
        "词条图册",
    ];

    fn assert_clean(markdown: &str) {
        for chrome in CHROME {
            assert!(!markdown.contains(chrome), "{chrome:?} leaked into:\n{markdown}");
        }
        for bracket in ['[', ']', '［', '］'] {
            assert!(!markdown.contains(bracket), "a citation mark is left in:\n{markdown}");
        }
        assert!(!markdown.contains("\n\n\n"), "{markdown}");
        assert!(!markdown.contains('\u{a0}'), "{markdown}");
        assert!(markdown.ends_with('\n') && !markdown.ends_with("\n\n"), "{markdown}");
        assert!(markdown.lines().all(|line| line == line.trim()), "{markdown}");
    }

    /// The article text: every character of the Markdown but its markup and whitespace.
    fn article_chars(markdown: &str) -> usize {
        markdown.chars().filter(|c| !c.is_whitespace() && !matches!(c, '#' | '-' | '|')).count()
    }

    #[test]
    fn current_markup_gives_title_description_and_id() {
        let item = libai();
        assert_eq!(item.title, "李白");
        assert_eq!(item.description.as_deref(), Some("唐代诗人"));
        assert_eq!(item.id.as_deref(), Some("1043"));
    }

    #[test]
    fn current_markup_markdown_has_summary_facts_and_sections() {
        let markdown = libai().markdown;
        assert!(markdown.starts_with("# 李白\n\n李白（701年－762年），字太白，号青莲居士，唐代诗人，"), "{markdown}");
        assert!(markdown.contains("两人合称“李杜”。\n\n李白一生漫游四方"), "{markdown}");
        for line in [
            "## 基本信息\n\n- 中文名：李白\n",
            "- 别名：李太白、李翰林、诗仙\n",
            "- 字：太白\n",
            "- 号：青莲居士、谪仙人\n",
            "- 所处时代：唐朝\n",
            "- 出生地：一说西域碎叶城，一说绵州昌隆县\n",
            "- 出生日期：701年\n",
            "- 逝世日期：762年\n",
            "- 主要作品：《静夜思》《蜀道难》《将进酒》《行路难》等\n",
        ] {
            assert!(markdown.contains(line), "{line:?} missing from:\n{markdown}");
        }
        let headings: Vec<&str> = markdown.lines().filter(|line| line.starts_with("##")).collect();
        assert_eq!(
            headings,
            [
                "## 基本信息",
                "## 人物生平",
                "### 早年经历",
                "### 仗剑远游",
                "### 供奉翰林",
                "### 晚年漂泊",
                "## 文学成就",
                "### 诗歌风格",
                "### 代表作品",
                "## 后世影响",
                "## 轶事典故",
                "### 铁杵磨针",
                "### 醉草国书"
            ]
        );
        assert!(markdown.contains("### 早年经历\n\n关于李白的出生地，历来有不同说法："), "{markdown}");
        assert!(markdown.contains("- 《静夜思》：写客居他乡的夜晚对故乡的思念。\n- 《蜀道难》"), "{markdown}");
        assert!(markdown.contains("\n\n## 后世影响\n\n李白与杜甫代表了唐诗的两座高峰"), "{markdown}");
        assert!(article_chars(&markdown) >= 1500, "{} characters", article_chars(&markdown));
        assert_clean(&markdown);
    }

    #[test]
    fn current_markup_polysemants_list_every_meaning() {
        let item = libai();
        let expected = [
            ("唐代诗人", "1043", "https://baike.baidu.com/item/%E6%9D%8E%E7%99%BD/1043"),
            ("李荣浩演唱歌曲", "7179", "https://baike.baidu.com/item/%E6%9D%8E%E7%99%BD/7179"),
            ("手游《王者荣耀》中的英雄", "19868386", "https://baike.baidu.com/item/%E6%9D%8E%E7%99%BD/19868386"),
        ];
        assert_eq!(item.polysemants.len(), expected.len(), "{:#?}", item.polysemants);
        for (candidate, (description, id, url)) in item.polysemants.iter().zip(expected) {
            assert_eq!(candidate.title, "李白");
            assert_eq!(candidate.description, description);
            assert_eq!(candidate.id.as_deref(), Some(id));
            assert_eq!(candidate.url, url);
        }
    }

    #[test]
    fn polysemant_urls_follow_the_page_url() {
        // The end-to-end tests serve the fixtures from a local server.
        let item = parse_item(LIBAI, &url("http://127.0.0.1:8123/item/%E6%9D%8E%E7%99%BD/1043?fr=x")).unwrap();
        let urls: Vec<&str> = item.polysemants.iter().map(|candidate| candidate.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:8123/item/%E6%9D%8E%E7%99%BD/1043",
                "http://127.0.0.1:8123/item/%E6%9D%8E%E7%99%BD/7179",
                "http://127.0.0.1:8123/item/%E6%9D%8E%E7%99%BD/19868386",
            ]
        );
    }

    #[test]
    fn the_song_page_selects_the_song() {
        let item = parse_item(LIBAI_SONG, &url("https://baike.baidu.com/item/%E6%9D%8E%E7%99%BD/7179")).unwrap();
        assert_eq!(item.title, "李白");
        assert_eq!(item.description.as_deref(), Some("李荣浩演唱歌曲"));
        assert_eq!(item.id.as_deref(), Some("7179"));
        let meanings: Vec<(&str, Option<&str>)> =
            item.polysemants.iter().map(|c| (c.description.as_str(), c.id.as_deref())).collect();
        assert_eq!(
            meanings,
            [
                ("唐代诗人", Some("1043")),
                ("李荣浩演唱歌曲", Some("7179")),
                ("手游《王者荣耀》中的英雄", Some("19868386"))
            ]
        );
        let markdown = &item.markdown;
        assert!(markdown.starts_with("# 李白\n\n《李白》是由李荣浩作词、作曲并演唱的一首流行歌曲"), "{markdown}");
        assert!(markdown.contains("- 所属专辑：模特\n"), "{markdown}");
        assert!(markdown.contains("- 填词：李荣浩\n"), "{markdown}");
        assert!(markdown.contains("\n## 歌曲鉴赏\n\n这首歌借唐代诗人李白的名字"), "{markdown}");
        assert!(!markdown.contains("谪仙人"), "the poet's page leaked in:\n{markdown}");
        assert!(article_chars(markdown) >= 200, "{} characters", article_chars(markdown));
        assert_clean(markdown);
    }

    #[test]
    fn classic_markup_gives_title_description_and_id() {
        let item = zhugeliang();
        assert_eq!(item.title, "诸葛亮");
        assert_eq!(item.description.as_deref(), Some("三国时期蜀汉丞相"));
        assert_eq!(item.id.as_deref(), Some("21048"));
        assert_eq!(item.polysemants, []);
    }

    #[test]
    fn classic_markup_markdown_has_summary_facts_and_sections() {
        let markdown = zhugeliang().markdown;
        assert!(markdown.starts_with("# 诸葛亮\n\n诸葛亮（181年－234年），字孔明，号卧龙，"), "{markdown}");
        assert!(markdown.contains("三国时期蜀汉丞相，杰出的政治家、军事家、文学家。\n\n他早年隐居南阳"), "{markdown}");
        for line in [
            "## 基本信息\n\n- 中文名：诸葛亮\n- 别名：卧龙、伏龙\n- 字：孔明\n- 所处时代：三国\n",
            "- 出生地：琅琊阳都（今山东临沂市沂南县）\n",
            "- 主要作品：《出师表》《诫子书》\n",
            "- 爵位：武乡侯\n- 谥号：忠武侯\n\n",
        ] {
            assert!(markdown.contains(line), "{line:?} missing from:\n{markdown}");
        }
        let headings: Vec<&str> = markdown.lines().filter(|line| line.starts_with("##")).collect();
        assert_eq!(
            headings,
            [
                "## 基本信息",
                "## 人物生平",
                "### 隐居隆中",
                "### 三顾茅庐",
                "### 联吴抗曹",
                "### 受托辅政",
                "### 北伐中原",
                "## 主要作品",
                "## 家族成员",
                "## 历史评价"
            ]
        );
        assert!(markdown.contains("孙刘联军随后在赤壁大败曹军"), "{markdown}");
        assert!(
            markdown.contains(
                "| 篇名 | 简介 |\n| --- | --- |\n| 《出师表》 | 北伐出发前写给后主的奏表，劝勉后主亲贤远佞 |\n"
            ),
            "{markdown}"
        );
        assert!(markdown.contains("- 他还改进了连发的弩"), "{markdown}");
        assert!(article_chars(&markdown) >= 1500, "{} characters", article_chars(&markdown));
        assert_clean(&markdown);
    }

    #[test]
    fn the_missing_lemma_page_is_not_a_lemma() {
        for page in [
            "https://baike.baidu.com/error.html?status=404&uri=/item/%E6%97%A0",
            "https://baike.baidu.com/item/%E6%97%A0%E6%AD%A4%E8%AF%8D%E6%9D%A1",
        ] {
            assert_eq!(parse_item(NOT_FOUND, &url(page)), Err(BaikeError::NotALemma), "{page}");
        }
        // Whatever the body, Baike's error URL is no lemma.
        assert_eq!(parse_item(LIBAI, &url("https://baike.baidu.com/error.html")), Err(BaikeError::NotALemma));
        let search = "<html><body><div class=\"no-result\">百度百科尚未收录词条 “无此词条”</div></body></html>";
        assert_eq!(parse_item(search, &url("https://baike.baidu.com/search/none")), Err(BaikeError::NotALemma));
    }

    #[test]
    fn other_pages_are_not_lemmas() {
        let page = "<!DOCTYPE html><html><head><title>Ada Lovelace - Example Magazine</title></head><body>\
            <nav><ul><li><a href=\"/\">Home</a></li></ul></nav><h1>Ada Lovelace</h1>\
            <p class=\"para\">Ada Lovelace wrote the first published program.</p>\
            <dl><dt>Born</dt><dd>1815</dd></dl><footer>© Example</footer></body></html>";
        let page_url = url("https://example.com/ada");
        assert_eq!(parse_item(page, &page_url), Err(BaikeError::NotALemma));
        for page in ["", "   ", "<html></html>", "not html at all", "{\"lemmaId\": 1}"] {
            assert_eq!(parse_item(page, &page_url), Err(BaikeError::NotALemma), "{page:?}");
        }
        // A title alone is no lemma.
        let bare = "<dd class=\"lemmaWgt-lemmaTitle-title\"><h1>李白</h1></dd>";
        assert_eq!(parse_item(bare, &page_url), Err(BaikeError::NotALemma));
    }

    #[test]
    fn item_url_percent_encodes_the_title_and_appends_the_id() {
        let base = url("https://baike.baidu.com");
        assert_eq!(item_url(&base, "李白", None).as_str(), "https://baike.baidu.com/item/%E6%9D%8E%E7%99%BD");
        assert_eq!(
            item_url(&base, "李白", Some("1043")).as_str(),
            "https://baike.baidu.com/item/%E6%9D%8E%E7%99%BD/1043"
        );
        assert_eq!(
            item_url(&url("https://baike.baidu.com/?x=1#top"), "AC/DC 50%?#", None).as_str(),
            "https://baike.baidu.com/item/AC%2FDC%2050%25%3F%23"
        );
        assert_eq!(
            item_url(&url("http://127.0.0.1:9000/baike/"), "诸葛亮", Some("21048")).as_str(),
            "http://127.0.0.1:9000/baike/item/%E8%AF%B8%E8%91%9B%E4%BA%AE/21048"
        );
        assert_eq!(
            item_url(&url("http://127.0.0.1:9000/baike"), "诸葛亮", None).as_str(),
            "http://127.0.0.1:9000/baike/item/%E8%AF%B8%E8%91%9B%E4%BA%AE"
        );
        let round_trip = item_url(&base, "AC/DC 50%?#", Some("7"));
        assert_eq!(item_path(&round_trip), Some(("AC/DC 50%?#".to_owned(), Some("7".to_owned()))));
    }

    #[test]
    fn classic_polysemant_list() {
        let page = r#"<html><head><title>李白（唐代诗人）_百度百科</title></head><body><div class="main-content">
            <dl class="lemmaWgt-lemmaTitle"><dd class="lemmaWgt-lemmaTitle-title"><h1>李白</h1></dd></dl>
            <div class="polysemant-list polysemant-list-normal">
              <a class="polysemantList-header-title" href="/item/%E6%9D%8E%E7%99%BD?force=1">多义词</a>
              <ul class="polysemantList-wrapper cmn-clearfix">
                <li class="item">▪<span class="selected" title="唐代诗人">唐代诗人</span></li>
                <li class="item">▪<a title="李荣浩演唱歌曲" href="/item/%E6%9D%8E%E7%99%BD/7179#viewPageContent">李荣浩演唱歌曲</a></li>
              </ul>
            </div>
            <div class="lemma-summary"><div class="para">李白是唐代诗人。</div></div>
            </div><div class="lemmaWgt-promotion-rightPreciseAd" data-lemmaid="1043"></div></body></html>"#;
        let item = parse_item(page, &url("https://baike.baidu.com/item/%E6%9D%8E%E7%99%BD")).unwrap();
        assert_eq!(item.description.as_deref(), Some("唐代诗人"), "from the selected meaning, then <title>");
        assert_eq!(item.id.as_deref(), Some("1043"));
        assert_eq!(item.markdown, "# 李白\n\n李白是唐代诗人。\n");
        assert_eq!(
            item.polysemants,
            [
                Candidate {
                    title: "李白".into(),
                    id: Some("1043".into()),
                    description: "唐代诗人".into(),
                    url: "https://baike.baidu.com/item/%E6%9D%8E%E7%99%BD/1043".into(),
                },
                Candidate {
                    title: "李白".into(),
                    id: Some("7179".into()),
                    description: "李荣浩演唱歌曲".into(),
                    url: "https://baike.baidu.com/item/%E6%9D%8E%E7%99%BD/7179".into(),
                },
            ]
        );
    }

    #[test]
    fn the_current_meaning_is_always_listed_and_one_meaning_is_no_list() {
        let page = |items: &str| {
            format!(
                r#"<html><body><dd class="lemmaWgt-lemmaTitle-title"><h1>李白</h1><h2>（唐代诗人）</h2></dd>
                <ul class="polysemantList-wrapper">{items}</ul>
                <div class="lemma-summary"><div class="para">诗人。</div></div></body></html>"#
            )
        };
        let page_url = url("https://baike.baidu.com/item/%E6%9D%8E%E7%99%BD/1043");
        let other = r#"<li class="item"><a href="/item/%E6%9D%8E%E7%99%BD/7179">李荣浩演唱歌曲</a></li>"#;
        let item = parse_item(&page(other), &page_url).unwrap();
        let meanings: Vec<(&str, Option<&str>)> =
            item.polysemants.iter().map(|c| (c.description.as_str(), c.id.as_deref())).collect();
        assert_eq!(meanings, [("唐代诗人", Some("1043")), ("李荣浩演唱歌曲", Some("7179"))]);

        let selected_only = r#"<li class="item"><span class="selected">唐代诗人</span></li>"#;
        assert_eq!(parse_item(&page(selected_only), &page_url).unwrap().polysemants, []);
    }

    #[test]
    fn meanings_come_from_page_data_when_the_list_is_not_drawn() {
        let page = r#"<html><head><script>window.PAGE_DATA= {"lemmaId":"1043","lemmaTitle":"李白","lemmaDesc":"唐代诗人",
            "navigation":{"lemmas":[{"lemmaId":1043,"lemmaDesc":"唐代诗人"},{"lemmaId":7179,"lemmaDesc":"李荣浩演唱歌曲"}]}};
            window.other = {};</script></head><body>
            <h1 class="lemmaTitle_abc12 J-lemma-title">李白</h1>
            <div id="lemmaDesc"><div class="polysemantText_x1"><span>同名词条(2)</span></div></div>
            <div class="lemmaSummary_q9 J-summary"><div class="para_z1 summary_y2">诗人。</div></div></body></html>"#;
        let item = parse_item(page, &url("https://baike.baidu.com/item/%E6%9D%8E%E7%99%BD")).unwrap();
        assert_eq!(item.id.as_deref(), Some("1043"));
        assert_eq!(item.description.as_deref(), Some("唐代诗人"));
        let meanings: Vec<(&str, Option<&str>, &str)> =
            item.polysemants.iter().map(|c| (c.description.as_str(), c.id.as_deref(), c.url.as_str())).collect();
        assert_eq!(
            meanings,
            [
                ("唐代诗人", Some("1043"), "https://baike.baidu.com/item/%E6%9D%8E%E7%99%BD/1043"),
                ("李荣浩演唱歌曲", Some("7179"), "https://baike.baidu.com/item/%E6%9D%8E%E7%99%BD/7179"),
            ]
        );
    }

    #[test]
    fn a_disambiguation_page_lists_meanings_without_a_lemma() {
        let page = r#"<html><body><h1 class="lemmaTitle_k2 J-lemma-title">李白</h1>
            <p>本词条是一个多义词，请在下列义项中选择浏览</p>
            <div class="contentItem_a"><a class="contentItemChild_b" href="/item/%E6%9D%8E%E7%99%BD/1043?fromModule=disambiguation"><span class="contentItemChildText_c">唐代诗人</span></a>
            <a class="contentItemChild_b" href="/item/%E6%9D%8E%E7%99%BD/7179"><span class="contentItemChildText_c">李荣浩演唱歌曲</span></a></div></body></html>"#;
        let item = parse_item(page, &url("https://baike.baidu.com/item/%E6%9D%8E%E7%99%BD")).unwrap();
        assert_eq!((item.title.as_str(), item.id, item.description), ("李白", None, None));
        assert_eq!(item.markdown, "# 李白\n");
        let ids: Vec<Option<&str>> = item.polysemants.iter().map(|c| c.id.as_deref()).collect();
        assert_eq!(ids, [Some("1043"), Some("7179")]);
    }

    #[test]
    fn text_is_normalised() {
        assert_eq!(strip_citations("甲[1]乙[2-3]丙[4, 5]丁［6］戊[注]己[]"), "甲乙丙丁戊[注]己[]");
        assert_eq!(clean_line("  李白\n  字太白，\u{a0}号 青莲居士 (701年)  "), "李白字太白，号青莲居士 (701年)");
        assert_eq!(clean_line("Li Bai  was a  poet [12]."), "Li Bai was a poet.");
        assert_eq!(join_list(vec!["甲".into(), "乙，".into(), "丙".into()]), "甲、乙，丙");
        assert_eq!(percent_decode("%E6%9D%8E%ZZ%E7%99%BD%"), "李%ZZ白%");
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        // Spans, because html5ever's own scope checks make nested `div`s quadratic to parse.
        let depth = 100_000;
        let (open, close) = ("<span>".repeat(depth), "</span>".repeat(depth));
        let page = format!(
            "<h1 class=\"lemmaTitle_a\">深</h1><div class=\"J-lemma-content\">{open}<div class=\"para_b\">{open}底{close}</div>{close}</div>"
        );
        let item = parse_item(&page, &url("https://baike.baidu.com/item/x")).unwrap();
        assert_eq!(item.markdown, "# 深\n\n底\n");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn garbage_never_panics(text in "\\PC*", cut in 0usize..40_000) {
            let page_url = url("https://baike.baidu.com/item/x");
            let _ = parse_item(&text, &page_url);
            // Pages cut anywhere, and spliced with garbage.
            for fixture in [LIBAI, ZHUGELIANG] {
                let mut at = cut.min(fixture.len());
                while !fixture.is_char_boundary(at) {
                    at -= 1;
                }
                let _ = parse_item(&fixture[..at], &page_url);
                let _ = parse_item(&format!("{}{text}{}", &fixture[..at], &fixture[at..]), &page_url);
            }
        }
    }
}
