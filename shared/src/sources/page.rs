//! A fetched web page's bytes → text → the Markdown document the prompts embed.
//!
//! - Decoding ([`decode`]) takes the browsers' order — a byte order mark, then the charset the
//!   server declared, then a `<meta>` one, then a guess — because pages are made for browsers:
//!   what a browser shows is what the author checked. Chinese pages still often come in GBK
//!   without saying so, hence a real detector's guess (chardetng, Firefox's) rather than assuming
//!   UTF-8 or Windows-1252.
//! - Which of a page's blocks is its article is decided by readability (`dom_smoothie`, a port of
//!   Mozilla's readability.js behind Firefox's reader view) rather than by heuristics of our own:
//!   that problem has been tuned against real sites for years there, and its Markdown keeps the
//!   headings, lists and links a model reads the structure from. It already keeps its best attempt
//!   when a page is below its length threshold (short pages come out whole); where it finds
//!   nothing at all, or is not run (see the bounds), the body's text stands in, so a page with
//!   something to say never yields nothing.
//! - Bounds: readability clones and scores the whole tree up to four times, so a document of more
//!   than [`MAX_READABILITY_ELEMENTS`] elements gets the plain body text instead; the Markdown is
//!   cut at [`MAX_PAGE_MARKDOWN_CHARS`], more than any prompt takes, so that one huge page costs
//!   no more than that downstream; control characters are dropped because they mean nothing to a
//!   model and some break what stores the text (PostgreSQL's `text` refuses NUL).
//! - Everything here is CPU-bound and synchronous (a few megabytes of HTML take a tenth of a
//!   second or more in a release build): async callers run it in `tokio::task::spawn_blocking`.

use dom_query::Document;
use dom_smoothie::{Config, Readability, TextMode};
use encoding_rs::{Encoding, UTF_8};
use url::Url;

/// Longest Markdown a page yields (characters); longer output is cut on a char boundary.
pub const MAX_PAGE_MARKDOWN_CHARS: usize = 200_000;

/// Documents with more elements than this skip readability for the body's text. Long
/// encyclopedia articles have some tens of thousands; beyond that is mostly generated markup
/// (huge tables, infinite feeds) where scoring costs much and finds little.
const MAX_READABILITY_ELEMENTS: usize = 40_000;

/// How far into an HTML document a `<meta>` charset is looked for. The HTML standard's prescan
/// reads 1024 bytes; real pages put scripts and styles before it often enough to read further.
const META_PRESCAN_BYTES: usize = 4096;

/// Longest title kept (characters): a title is a label, and a page can put anything in `<title>`.
const MAX_TITLE_CHARS: usize = 500;

/// Elements left out of the body's text when readability finds no article: they are the page's
/// furniture or its code, not its content.
const NON_CONTENT_TAGS: &[&str] = &[
    "head", "script", "style", "noscript", "template", "meta", "nav", "header", "footer", "aside", "form", "button",
    "select", "iframe", "svg",
];

/// Bytes → text. Order: a BOM; else the declared charset (the `Content-Type` header's); else, for
/// HTML, a `<meta charset=…>` or `<meta http-equiv="Content-Type" content="…charset=…">` in the
/// first [`META_PRESCAN_BYTES`] bytes; else UTF-8 if the bytes are valid UTF-8; else chardetng's
/// guess. Malformed sequences become U+FFFD.
///
/// As in browsers, a declared charset wins over the page's own `<meta>` even when the bytes
/// contradict it (a header saying UTF-8 over GBK bytes gives U+FFFDs, not a second opinion):
/// second-guessing a declaration would make the outcome depend on heuristics where it need not.
/// Labels that encoding_rs maps to its "replacement" encoding (ISO-2022-KR and the like, which
/// would decode the whole page to one U+FFFD) count as no declaration.
pub fn decode(body: &[u8], declared_charset: Option<&str>, media_type: &str) -> String {
    if let Some((encoding, bom_length)) = Encoding::for_bom(body) {
        return decode_with(encoding, &body[bom_length..]);
    }
    let encoding = declared_charset
        .and_then(|label| Encoding::for_label_no_replacement(label.as_bytes()))
        .or_else(|| if Kind::of(media_type) == Kind::Html { meta_charset(body) } else { None })
        .unwrap_or_else(|| sniff(body));
    decode_with(encoding, body)
}

fn decode_with(encoding: &'static Encoding, bytes: &[u8]) -> String {
    encoding.decode_without_bom_handling(bytes).0.into_owned()
}

/// The encoding of undeclared bytes: UTF-8 when they are valid UTF-8 (legacy encodings rarely
/// are by accident), else chardetng's guess among the legacy ones.
fn sniff(body: &[u8]) -> &'static Encoding {
    if std::str::from_utf8(body).is_ok() {
        return UTF_8;
    }
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(body, true);
    detector.guess(None, false)
}

/// The encoding a `<meta>` tag names near the start of an HTML document. A simplification of the
/// HTML standard's prescan: any `charset=` inside a `<meta …>` tag counts (both the `charset`
/// attribute and `http-equiv`'s `content` say it that way), and comments are not skipped.
fn meta_charset(body: &[u8]) -> Option<&'static Encoding> {
    let head = body[..body.len().min(META_PRESCAN_BYTES)].to_ascii_lowercase();
    let mut rest = head.as_slice();
    while let Some(start) = find(rest, b"<meta") {
        let tag = &rest[start + b"<meta".len()..];
        let end = tag.iter().position(|&byte| byte == b'>').unwrap_or(tag.len());
        // `<metadata>` and the like are other tags.
        if tag.first().is_some_and(|&byte| byte.is_ascii_whitespace() || byte == b'/')
            && let Some(encoding) = charset_in(&tag[..end])
        {
            // The tag was just read as ASCII, so the page cannot be UTF-16 whatever it says.
            return Some(encoding.output_encoding());
        }
        rest = &tag[end..];
    }
    None
}

/// The encoding named by the first usable `charset=` in a tag's attributes.
fn charset_in(mut attributes: &[u8]) -> Option<&'static Encoding> {
    while let Some(at) = find(attributes, b"charset") {
        attributes = &attributes[at + b"charset".len()..];
        let Some(value) = attributes.trim_ascii_start().strip_prefix(b"=") else { continue };
        let value = value.trim_ascii_start();
        let value = value.strip_prefix(b"\"").or_else(|| value.strip_prefix(b"'")).unwrap_or(value);
        let length = value
            .iter()
            .position(|&byte| byte.is_ascii_whitespace() || matches!(byte, b'"' | b'\'' | b';' | b'/'))
            .unwrap_or(value.len());
        if let Some(encoding) = Encoding::for_label_no_replacement(&value[..length]) {
            return Some(encoding);
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// What a page yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageText {
    pub title: Option<String>,
    pub markdown: String,
}

/// An HTML page's main content as Markdown: readability's article (links made absolute against
/// `url`), or the body's text where it finds none. The title is readability's (which prefers the
/// page's metadata and strips a site name from `<title>`), else `<title>`'s. The Markdown is
/// trimmed, holds no control characters but `\n` and `\t`, and is cut at
/// [`MAX_PAGE_MARKDOWN_CHARS`].
pub fn html_to_markdown(html: &str, url: &Url) -> PageText {
    let page = article(html, url).unwrap_or_else(|| body_text(html, url));
    PageText {
        title: page.title.as_deref().and_then(clean_title),
        markdown: clean_markdown(&page.markdown, MAX_PAGE_MARKDOWN_CHARS),
    }
}

/// Readability's article, or `None` where it finds none (or the document is too large for it).
fn article(html: &str, url: &Url) -> Option<PageText> {
    let config =
        Config { text_mode: TextMode::Markdown, max_elements_to_parse: MAX_READABILITY_ELEMENTS, ..Config::default() };
    // Readability calls some URLs relative that `url` parses (`data:`, `foo://`); they only cost
    // the absolute links.
    let mut readability = Readability::new(html, Some(url.as_str()), Some(config.clone()))
        .or_else(|_| Readability::new(html, None, Some(config)))
        .ok()?;
    match readability.parse() {
        Ok(article) if !article.text_content.trim().is_empty() => {
            Some(PageText { title: Some(article.title), markdown: article.text_content.to_string() })
        }
        Ok(_) => None,
        Err(error) => {
            tracing::debug!(%url, %error, "no readable article; the page's body text stands in");
            None
        }
    }
}

/// The body's text as Markdown, without the page's furniture.
fn body_text(html: &str, url: &Url) -> PageText {
    let document = Document::from(html);
    absolutize_links(&document, url);
    let title = document.select_single("title").text().to_string();
    let body = document.select_single("body");
    let markdown = body.nodes().first().map(|node| node.md(Some(NON_CONTENT_TAGS)).to_string()).unwrap_or_default();
    PageText { title: Some(title), markdown }
}

/// Links and images against the page's URL, as readability leaves them: a relative link means
/// nothing once the text is out of its page.
fn absolutize_links(document: &Document, url: &Url) {
    for (selector, attribute) in [("a[href]", "href"), ("img[src]", "src")] {
        for node in document.select(selector).nodes() {
            if let Some(absolute) = node.attr(attribute).and_then(|link| url.join(link.trim()).ok()) {
                node.set_attr(attribute, absolute.as_str());
            }
        }
    }
}

/// A title on one line, without control characters, or `None` when nothing is left.
fn clean_title(title: &str) -> Option<String> {
    let title = title.chars().filter(|character| !character.is_control()).collect::<String>();
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    let title = cut(&title, MAX_TITLE_CHARS).trim_end();
    (!title.is_empty()).then(|| title.to_owned())
}

/// `text` with line breaks as `\n`, no other control characters but `\t`, trimmed, and at most
/// `limit` characters.
fn clean_markdown(text: &str, limit: usize) -> String {
    let text = text
        .replace("\r\n", "\n")
        .chars()
        .map(|character| if character == '\r' { '\n' } else { character })
        .filter(|&character| !character.is_control() || matches!(character, '\n' | '\t'))
        .collect::<String>();
    cut(text.trim(), limit).trim_end().to_owned()
}

/// The first `limit` characters of `text`.
fn cut(text: &str, limit: usize) -> &str {
    text.char_indices().nth(limit).map_or(text, |(at, _)| &text[..at])
}

/// How a fetched document is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Html,
    Json,
    Text,
}

impl Kind {
    /// Tolerates parameters and case, though the fetcher already strips and lowers them.
    fn of(media_type: &str) -> Self {
        let essence = media_type.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("text/html") || essence.eq_ignore_ascii_case("application/xhtml+xml") {
            Self::Html
        } else if essence.eq_ignore_ascii_case("application/json") {
            Self::Json
        } else {
            Self::Text
        }
    }
}

/// Any fetched document as Markdown, after [`decode`]: HTML through [`html_to_markdown`], JSON
/// pretty-printed in a fenced `json` block when it parses (as text when it does not), anything
/// else as its text. Only HTML has a title.
pub fn to_markdown(body: &[u8], declared_charset: Option<&str>, media_type: &str, url: &Url) -> PageText {
    let kind = Kind::of(media_type);
    let text = decode(body, declared_charset, media_type);
    match kind {
        Kind::Html => html_to_markdown(&text, url),
        Kind::Json => PageText { title: None, markdown: json_markdown(&text) },
        Kind::Text => PageText { title: None, markdown: clean_markdown(&text, MAX_PAGE_MARKDOWN_CHARS) },
    }
}

/// JSON re-indented in a fenced block, so that a minified document reads as well as a formatted
/// one; text that is not JSON stays text. (Keys come out sorted: `serde_json` keeps no order
/// without its `preserve_order` feature.)
fn json_markdown(text: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return clean_markdown(text, MAX_PAGE_MARKDOWN_CHARS);
    };
    let pretty = serde_json::to_string_pretty(&value).unwrap_or_else(|_| text.to_owned());
    // A fence must be longer than any run of backticks inside it (strings may hold some).
    let fence = "`".repeat(longest_backtick_run(&pretty).max(2) + 1);
    let room = MAX_PAGE_MARKDOWN_CHARS - 2 * fence.len() - "json\n\n".len();
    format!("{fence}json\n{}\n{fence}", clean_markdown(&pretty, room))
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|character| character != '`').map(str::len).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ARTICLE: &[u8] = include_bytes!("../../../tests/fixtures/sources/pages/article.html");
    const GBK: &[u8] = include_bytes!("../../../tests/fixtures/sources/pages/gbk.html");
    const GBK_UNDECLARED: &[u8] = include_bytes!("../../../tests/fixtures/sources/pages/gbk-undeclared.html");

    /// Phrases of the GBK fixtures' article, which only a right decoding yields.
    const LI_BAI: &[&str] = &["李白，字太白，号青莲居士", "朝辞白帝彩云间，千里江陵一日还", "举头望明月，低头思故乡"];

    fn url() -> Url {
        Url::parse("https://history.example.org/2024/03/ada-lovelace").unwrap()
    }

    fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = find(bytes, from).unwrap();
        [&bytes[..at], to, &bytes[at + from.len()..]].concat()
    }

    fn has_no_stray_controls(text: &str) -> bool {
        text.chars().all(|character| !character.is_control() || matches!(character, '\n' | '\t'))
    }

    fn assert_li_bai(text: &str) {
        for phrase in LI_BAI {
            assert!(text.contains(phrase), "{phrase} is missing from {text}");
        }
        assert!(!text.contains('\u{FFFD}'));
    }

    #[test]
    fn the_article_is_kept_and_the_page_furniture_dropped() {
        let page = to_markdown(ARTICLE, None, "text/html", &url());
        assert_eq!(page.title.as_deref(), Some("Ada Lovelace: The Poet of Numbers"));
        for kept in [
            "Augusta Ada King, Countess of Lovelace, was born in London on 10 December 1815",
            "## Meeting Babbage",
            "it is often described as the first published computer program.",
            "> The Analytical Engine weaves algebraical patterns",
            "now celebrated as Ada Lovelace Day",
            "[Charles Babbage](https://history.example.org/people/charles-babbage)",
        ] {
            assert!(page.markdown.contains(kept), "{kept} is missing from {}", page.markdown);
        }
        for dropped in [
            "Subscribe to our newsletter",
            "Ancient World",
            "Luxury watches",
            "brain-training",
            "Most popular this week",
            "All rights reserved",
            "Privacy policy",
            "dataLayer",
            "font-family",
        ] {
            assert!(!page.markdown.contains(dropped), "{dropped} is in {}", page.markdown);
        }
    }

    #[test]
    fn gbk_declared_by_the_header_decodes() {
        assert_li_bai(&decode(GBK_UNDECLARED, Some("GBK"), "text/html"));
        assert_li_bai(&decode(GBK_UNDECLARED, Some("gb2312"), "text/html"));
        assert_li_bai(&decode(GBK_UNDECLARED, Some("gb18030"), "text/html"));
    }

    #[test]
    fn gbk_declared_by_a_meta_tag_decodes() {
        assert_li_bai(&decode(GBK, None, "text/html"));
        let http_equiv = br#"<head><META HTTP-EQUIV="Content-Type" CONTENT="text/html; charset=gb2312">"#;
        assert_li_bai(&decode(&replace(GBK_UNDECLARED, b"<head>", http_equiv), None, "text/html"));
    }

    #[test]
    fn meta_tags_are_read_as_browsers_read_them() {
        let charset = |head: &str| meta_charset(head.as_bytes()).map(Encoding::name);
        assert_eq!(
            charset(r#"<meta name="viewport" content="width=device-width"><meta charset='GB2312'>"#),
            Some("GBK")
        );
        assert_eq!(charset("<META\nCHARSET = big5 />"), Some("Big5"));
        assert_eq!(
            charset(r#"<meta http-equiv="content-type" content="text/html;charset=shift_jis">"#),
            Some("Shift_JIS")
        );
        // A page whose meta tag was just read as ASCII is not UTF-16, whatever it says.
        assert_eq!(charset(r#"<meta charset="utf-16le">"#), Some("UTF-8"));
        assert_eq!(charset(r#"<metadata charset="gbk"><meta charset="nonsense">"#), None);
        assert_eq!(charset(&format!("{}<meta charset=gbk>", " ".repeat(META_PRESCAN_BYTES))), None);
    }

    #[test]
    fn undeclared_gbk_is_recognised() {
        assert_li_bai(&decode(GBK_UNDECLARED, None, "text/html"));
        assert_li_bai(&decode(GBK_UNDECLARED, None, "text/plain"));
    }

    #[test]
    fn a_gbk_page_yields_its_article() {
        for bytes in [GBK, GBK_UNDECLARED] {
            let page = to_markdown(bytes, None, "text/html", &url());
            assert_eq!(page.title.as_deref(), Some("李白：盛唐的谪仙人 - 古典文学网"));
            assert_li_bai(&page.markdown);
            for dropped in ["登录注册", "名家书法", "热门文章", "版权所有"] {
                assert!(!page.markdown.contains(dropped), "{dropped} is in {}", page.markdown);
            }
        }
    }

    #[test]
    fn a_byte_order_mark_wins_over_any_declaration() {
        let utf8 = [b"\xEF\xBB\xBF".as_slice(), "<meta charset=\"gbk\"><p>诸葛亮</p>".as_bytes()].concat();
        assert_eq!(decode(&utf8, Some("gbk"), "text/html"), "<meta charset=\"gbk\"><p>诸葛亮</p>");
        let utf16: Vec<u8> =
            [0xFF, 0xFE].into_iter().chain("诸葛亮".encode_utf16().flat_map(u16::to_le_bytes)).collect();
        assert_eq!(decode(&utf16, Some("utf-8"), "text/plain"), "诸葛亮");
    }

    #[test]
    fn the_declared_charset_wins_over_the_meta_tag() {
        let meta_says_utf8 = replace(GBK, br#"charset="gbk""#, br#"charset="utf-8""#);
        assert_li_bai(&decode(&meta_says_utf8, Some("gbk"), "text/html"));
        // Even where the bytes contradict the declaration, as in browsers.
        let declared_wrong = decode(GBK, Some("utf-8"), "text/html");
        assert!(declared_wrong.contains('\u{FFFD}') && !declared_wrong.contains(LI_BAI[0]));
    }

    #[test]
    fn malformed_bytes_become_replacement_characters() {
        assert_eq!(decode(b"ok \xFF\xFE\xC3 end", Some("utf-8"), "text/plain"), "ok \u{FFFD}\u{FFFD}\u{FFFD} end");
        assert_eq!(decode(b"\x81", Some("gbk"), "text/plain"), "\u{FFFD}");
        // Unknown and "replacement" labels count as no declaration.
        assert_eq!(decode("诸葛亮".as_bytes(), Some("no-such-charset"), "text/plain"), "诸葛亮");
        assert_eq!(decode("诸葛亮".as_bytes(), Some("iso-2022-kr"), "text/plain"), "诸葛亮");
    }

    #[test]
    fn plain_text_is_its_text_without_control_characters() {
        let page = to_markdown(b"\n  Zhuge Liang\x00 was\r\na strategist.\x07\r\tEnd.  \n", None, "text/plain", &url());
        assert_eq!(page, PageText { title: None, markdown: "Zhuge Liang was\na strategist.\n\tEnd.".to_owned() });
    }

    #[test]
    fn json_is_pretty_printed_in_a_fence() {
        let page = to_markdown(br#"{"name":"Ada","born":1815}"#, None, "application/json", &url());
        assert_eq!(
            page,
            PageText { title: None, markdown: "```json\n{\n  \"born\": 1815,\n  \"name\": \"Ada\"\n}\n```".into() }
        );
        let backticks = to_markdown(br#"["````"]"#, None, "application/json; charset=utf-8", &url());
        assert_eq!(backticks.markdown, "`````json\n[\n  \"````\"\n]\n`````");
        let not_json = to_markdown(b"{name: Ada", None, "application/json", &url());
        assert_eq!(not_json.markdown, "{name: Ada");
    }

    #[test]
    fn a_short_page_yields_its_body_text() {
        let html = "<html><head><title>Note</title><style>p{}</style></head><body>\
                    <p>Zhuge Liang was chancellor of Shu Han.</p><p>He died in 234.</p></body></html>";
        let page = html_to_markdown(html, &url());
        assert_eq!(page.title.as_deref(), Some("Note"));
        assert_eq!(page.markdown, "Zhuge Liang was chancellor of Shu Han.\n\nHe died in 234.");
    }

    #[test]
    fn an_empty_page_yields_nothing() {
        assert_eq!(html_to_markdown("", &url()), PageText { title: None, markdown: String::new() });
        assert_eq!(
            html_to_markdown("<title> A \u{1} title\n</title><script>x()</script>", &url()),
            PageText { title: Some("A title".into()), markdown: String::new() }
        );
    }

    #[test]
    fn a_page_too_large_for_readability_yields_its_body_text() {
        let paragraphs = "<p>Chancellor of <a href=\"/shu\">Shu</a>.</p>".repeat(MAX_READABILITY_ELEMENTS / 2 + 1);
        let html = format!("<title>Zhuge Liang</title><nav><a href=\"/\">Home</a></nav>{paragraphs}");
        let page = html_to_markdown(&html, &url());
        assert_eq!(page.title.as_deref(), Some("Zhuge Liang"));
        assert!(page.markdown.starts_with("Chancellor of [Shu](https://history.example.org/shu).\n\n"));
        assert!(!page.markdown.contains("Home"));
    }

    #[test]
    fn long_output_is_cut_at_the_limit() {
        let text = "字".repeat(MAX_PAGE_MARKDOWN_CHARS + 10);
        let page = to_markdown(text.as_bytes(), None, "text/plain", &url());
        assert_eq!(page.markdown.chars().count(), MAX_PAGE_MARKDOWN_CHARS);
        let json = to_markdown(serde_json::json!([text]).to_string().as_bytes(), None, "application/json", &url());
        assert_eq!(json.markdown.chars().count(), MAX_PAGE_MARKDOWN_CHARS);
        assert!(json.markdown.starts_with("```json\n[\n") && json.markdown.ends_with("字\n```"));
    }

    /// Pieces of HTML-like text: tags (closed or not) with attributes, entities, arbitrary text.
    fn html_ish() -> impl Strategy<Value = String> {
        let tags = prop::sample::select(
            "p div script style h1 h2 a table tr td ul ol li br img pre code blockquote nav footer title head \
             body html meta noscript svg !--"
                .split_whitespace()
                .collect::<Vec<_>>(),
        );
        let attributes = prop::sample::select(vec![
            "",
            " class=\"content article\"",
            " class=\"sidebar ad-banner\"",
            " id=\"main\"",
            " href=\"/relative\"",
            " href=\"http://[::1\"",
            " href=\"javascript:alert(1)\"",
            " src=\"data:image/png;base64,AAAA\"",
            " charset=\"gbk\"",
            " style=\"display:none\"",
            " hidden",
            " unclosed=\"",
        ]);
        let piece = prop_oneof![
            (tags.clone(), attributes).prop_map(|(tag, attributes)| format!("<{tag}{attributes}>")),
            tags.prop_map(|tag| format!("</{tag}>")),
            prop::collection::vec(any::<char>(), 0..40).prop_map(String::from_iter),
            "[\\x00-\\x1f\\x7f-\\x9f a-z`#*_\\[\\]()<>&;]{0,30}",
            Just("&amp;&#0;&#x1F;&nbsp;&lt;&bogus".to_owned()),
        ];
        prop::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn html_to_markdown_never_panics_and_stays_clean(html in html_ish()) {
            let page = html_to_markdown(&html, &url());
            prop_assert!(page.markdown.chars().count() <= MAX_PAGE_MARKDOWN_CHARS);
            prop_assert!(has_no_stray_controls(&page.markdown), "{:?}", page.markdown);
            prop_assert_eq!(page.markdown.trim(), page.markdown.as_str());
            if let Some(title) = &page.title {
                prop_assert!(!title.is_empty() && has_no_stray_controls(title) && !title.contains(['\n', '\t']));
            }
        }

        #[test]
        fn decode_never_panics(
            prefix in prop::sample::select(vec!["", "<meta charset=\"gbk\">", "<meta charset=utf-16>", "\u{feff}"]),
            body in prop::collection::vec(any::<u8>(), 0..400),
            charset in prop::option::of(prop::sample::select(vec!["utf-8", "gbk", "utf-16le", "iso-2022-kr", "x"])),
            media_type in prop::sample::select(vec!["text/html", "text/plain", "application/json"]),
        ) {
            let bytes = [prefix.as_bytes(), &body].concat();
            let text = decode(&bytes, charset, media_type);
            let page = to_markdown(&bytes, charset, media_type, &url());
            prop_assert!(text.len() <= 3 * bytes.len() + 3);
            prop_assert!(has_no_stray_controls(&page.markdown));
        }
    }
}
