//! Every prompt the system sends, kept out of the code that sends it.
//!
//! A character is generated and played in one language, so the prompts come in sets, one per
//! [`Language`], behind one trait, [`PromptSet`]: a caller picks the set once
//! (`language.prompts()`, the language from a setting or [`Language::detect`] on the source) and
//! never branches on the language again. FastNPC is Chinese-first,
//! like the original, so [`zh`] is the reference set and [`en`] mirrors its shape and intent.
//!
//! What does not depend on the language lives here, once: the inputs ([`ChatPrompt`],
//! [`GroupPrompt`]), the budgets, and the renderers that cut memories and transcripts to their
//! budgets and lay out the persona. A set supplies only its words, so the sets cannot drift apart
//! in what they show the model.
//!
//! Templates take typed arguments (not `str.format` over user text, which broke the original when
//! a source contained braces).

use std::{fmt, fmt::Write, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::domain::{CATEGORIES, CategorySpec, FieldSpec, Profile, profile::SOURCE_CATEGORY};

pub mod en;
pub mod zh;

/// A language FastNPC has prompts in.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Chinese, the default: FastNPC is Chinese-first, like the original.
    #[default]
    Zh,
    En,
}

/// How much of a text [`Language::detect`] reads: the opening of a source decides, and a whole
/// encyclopedia entry should not cost a scan.
const DETECT_SAMPLE_CHARS: usize = 4000;

impl Language {
    pub const ALL: [Language; 2] = [Language::Zh, Language::En];

    /// The language's code, as serialized: `"zh"` or `"en"`.
    pub fn code(self) -> &'static str {
        match self {
            Language::Zh => "zh",
            Language::En => "en",
        }
    }

    /// The language a text is written in, for choosing the prompts of a character from its
    /// source.
    ///
    /// The rule: among the letters (alphabetic characters) of the first 4000 characters, a text
    /// is Chinese when CJK ideographs make up at least 20 % of them, English otherwise. One
    /// ideograph carries about as much as a five-letter English word, so 20 % is where the two
    /// languages hold about the same share of the content: an English text quoting a few Chinese
    /// names stays well below it, a Chinese text with Latin terms, URLs or Markdown links well
    /// above. A text without letters (empty, digits, punctuation) is Chinese, the default.
    /// Other languages go where the rule puts them: Japanese by its share of kanji, Korean and
    /// Latin-script languages to English.
    pub fn detect(text: &str) -> Language {
        let (mut letters, mut ideographs) = (0_usize, 0_usize);
        for c in text.chars().take(DETECT_SAMPLE_CHARS) {
            if is_cjk_ideograph(c) {
                ideographs += 1;
                letters += 1;
            } else if c.is_alphabetic() {
                letters += 1;
            }
        }
        if letters == 0 || ideographs * 5 >= letters { Language::Zh } else { Language::En }
    }

    /// The prompt set of this language.
    pub fn prompts(self) -> &'static dyn PromptSet {
        match self {
            Language::Zh => &zh::Zh,
            Language::En => &en::En,
        }
    }
}

/// The CJK Unified Ideographs and their extensions and compatibility blocks (planes 2 and 3 hold
/// nothing else). Kana, Hangul and CJK punctuation are not ideographs.
fn is_cjk_ideograph(c: char) -> bool {
    matches!(c, '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}' | '\u{F900}'..='\u{FAFF}' | '\u{20000}'..='\u{3FFFF}')
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A language tag that names no language FastNPC has prompts in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported language {0:?}: expected a Chinese (zh, zh-CN, …) or English (en, en-US, …) tag")]
pub struct UnsupportedLanguage(pub String);

impl FromStr for Language {
    type Err = UnsupportedLanguage;

    /// Parses a language tag by its primary subtag, case-insensitively: `zh`, `zh-CN`,
    /// `zh-Hans`, `zh-TW` are Chinese, `en`, `en-US`, `en-GB` English. `_` is accepted as the
    /// separator too, as in POSIX locales (`zh_CN.UTF-8`).
    fn from_str(tag: &str) -> Result<Self, Self::Err> {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or_default();
        if primary.eq_ignore_ascii_case("zh") {
            Ok(Language::Zh)
        } else if primary.eq_ignore_ascii_case("en") {
            Ok(Language::En)
        } else {
            Err(UnsupportedLanguage(tag.to_owned()))
        }
    }
}

/// The prompts of one language: one method per prompt the system sends, plus the labels the
/// prompts show for the profile's categories and fields.
///
/// Every set keeps the same shape and the same JSON output contracts (the keys the worker
/// parses), so a caller can switch sets without touching anything else.
pub trait PromptSet: Send + Sync {
    /// The version of this set's texts, `<code>-<year>.<month>.<n>` (e.g. `zh-2026.11.1`), to
    /// record with what the prompts produce, so a result can be traced to the texts that made
    /// it. Changing any prompt text of a set means bumping its version; the golden-file test
    /// fails until you do.
    fn version(&self) -> &'static str;

    fn language(&self) -> Language;

    /// System message of every profile-category call.
    fn profile_system(&self) -> &'static str;

    /// User message of one profile-category call: the category's fields by stored key, with
    /// label, shape and guidance, then the source.
    fn profile_category(&self, category: &CategorySpec, name: &str, source_markdown: &str) -> String;

    /// System message of the brief call.
    fn brief_system(&self) -> &'static str;

    /// User message of the brief call: a short third-person brief from the source.
    fn brief(&self, name: &str, source_markdown: &str) -> String;

    /// The six-part system prompt of a one-to-one chat. The current user message is not in it:
    /// it is the user turn.
    fn chat_system_prompt(&self, prompt: &ChatPrompt<'_>) -> String;

    /// System message of the session → short-term compression.
    fn stm_system(&self) -> &'static str;

    /// Session → short-term memory, from the character's point of view. Replies
    /// `{"short_memories": [...]}`.
    fn stm_compression(&self, character_name: &str, user_name: &str, overlap: &str, conversation: &str) -> String;

    /// System message of the short-term → long-term integration.
    fn ltm_system(&self) -> &'static str;

    /// Short-term → long-term integration. Replies `{"long_term_memories": [{"content",
    /// "importance", "reason"}], "merged_count", "discarded_count"}`.
    fn ltm_integration(&self, character_name: &str, brief: &str, short_term: &[String], long_term: &[String])
    -> String;

    /// The six-part system prompt of one member's group reply.
    fn group_system_prompt(&self, prompt: &GroupPrompt<'_>) -> String;

    /// The user turn of a group reply: the last lines and the cue to speak as `name`.
    fn group_user_turn(&self, name: &str, last_lines: &[String]) -> String;

    /// System message of the moderator.
    fn moderator_system(&self) -> &'static str;

    /// The moderator's prompt, given the members as `(name, brief)` and the recent lines.
    /// Replies `{"next_speaker", "reason", "confidence"}`.
    fn moderator(&self, participants: &[(String, String)], recent: &[String]) -> String;

    /// Group transcript → one member's short-term memory, from that member's point of view.
    /// `participants` are the user and the members, joined by the caller with
    /// [`name_separator`](Self::name_separator). Replies `{"short_memories": [...]}`.
    fn group_stm_compression(
        &self,
        character_name: &str,
        participants: &str,
        overlap: &str,
        conversation: &str,
    ) -> String;

    /// The label the prompts show for a field.
    fn field_label(&self, field: &FieldSpec) -> &'static str;

    /// What the model should write in a field.
    fn field_guidance(&self, field: &FieldSpec) -> &'static str;

    /// The label the prompts show for a category.
    fn category_label(&self, category: &CategorySpec) -> &'static str;

    /// What the prompts show for an empty value or list: `（无）`, `(none)`.
    fn none_marker(&self) -> &'static str;

    /// Joins names in running text, such as the participants of
    /// [`group_stm_compression`](Self::group_stm_compression): `、`, `, `.
    fn name_separator(&self) -> &'static str;

    /// How a member's own lines are labelled in the transcript given to
    /// [`group_stm_compression`](Self::group_stm_compression), so the memories say "I":
    /// `我（name）`, `me (name)`.
    fn own_speaker_label(&self, name: &str) -> String;

    /// The `source_size` value of a source of `chars` characters: `约N字`, `about N characters`.
    fn source_size(&self, chars: usize) -> String;
}

/// What the chat system prompt is built from. Budgets are in characters, as in the original.
pub struct ChatPrompt<'a> {
    pub character_name: &'a str,
    pub user_name: &'a str,
    pub user_bio: &'a str,
    pub profile: &'a Profile,
    pub long_term: &'a [String],
    pub short_term: &'a [String],
    /// The conversation before the current message, oldest first: `(is_user, text)`.
    pub transcript: &'a [(bool, String)],
    pub ltm_budget: usize,
    pub stm_budget: usize,
    pub session_budget: usize,
}

/// What a group reply's system prompt is built from.
pub struct GroupPrompt<'a> {
    pub character_name: &'a str,
    pub user_name: &'a str,
    pub user_bio: &'a str,
    pub profile: &'a Profile,
    pub long_term: &'a [String],
    pub short_term: &'a [String],
    /// The other members: `(name, brief)`.
    pub others: &'a [(String, String)],
    /// Recent transcript lines (`speaker: text`), oldest first.
    pub transcript: &'a [String],
}

/// Long- and short-term memory budgets of group prompts (the original's fixed 4000 and 3000).
pub const GROUP_LTM_BUDGET: usize = 4000;
pub const GROUP_STM_BUDGET: usize = 3000;
/// The group transcript's budget in the system prompt (the original's 3000).
pub const GROUP_TRANSCRIPT_BUDGET: usize = 3000;

/// The words a set puts around what its chat and group prompts share: the persona (part ②), the
/// memories (③, ④) and the transcript (⑥). The layout and the cutting rules are the renderers'
/// below.
struct Wording {
    /// Shown for an empty value, list or transcript.
    none: &'static str,
    /// Joins the items of a list field on its one line.
    item_separator: &'static str,
    /// Part ②'s heading and lead-in, given the character's name.
    persona_heading: fn(name: &str) -> String,
    /// A category's heading line, given its label.
    category_heading: fn(label: &str) -> String,
    /// A field as the character's own line, given its label and value.
    field_line: fn(label: &str, value: &str) -> String,
    category_label: fn(&CategorySpec) -> &'static str,
    field_label: fn(&FieldSpec) -> &'static str,
    /// The rule that closes part ②.
    safety: &'static str,
    /// Part ③'s heading and lead-in.
    long_term_heading: &'static str,
    /// Part ④'s heading and lead-in.
    short_term_heading: &'static str,
}

/// Parts ② to ④, shared by single and group chat: the profile as first-person lines, then
/// long- and short-term memory within their budgets.
fn persona_and_memories(
    wording: &Wording,
    name: &str,
    profile: &Profile,
    long_term: &[String],
    short_term: &[String],
    ltm_budget: usize,
    stm_budget: usize,
) -> String {
    let mut prompt = String::new();
    let _ = writeln!(prompt, "{}", (wording.persona_heading)(name));
    for category in CATEGORIES.iter().filter(|c| c.key != SOURCE_CATEGORY) {
        let _ = writeln!(prompt, "{}", (wording.category_heading)((wording.category_label)(category)));
        let fields = profile.get(category.key);
        for field in category.fields {
            let value = match fields.and_then(|f| f.get(field.key)) {
                Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
                Some(serde_json::Value::Array(items)) if !items.is_empty() => {
                    items.iter().filter_map(|i| i.as_str()).collect::<Vec<_>>().join(wording.item_separator)
                }
                _ => wording.none.to_owned(),
            };
            let _ = writeln!(prompt, "{}", (wording.field_line)((wording.field_label)(field), &value));
        }
    }
    let _ = write!(prompt, "{}\n\n", wording.safety);
    let _ = writeln!(prompt, "{}", wording.long_term_heading);
    prompt.push_str(&bullet_list(long_term, ltm_budget, wording.none));
    let _ = writeln!(prompt, "\n{}", wording.short_term_heading);
    prompt.push_str(&bullet_list(short_term, stm_budget, wording.none));
    prompt
}

/// `- item` lines, keeping items from the front while they fit in `budget` characters; an item
/// that does not fit is cut and marked with `…` (the original's truncation).
fn bullet_list(items: &[String], budget: usize, none: &str) -> String {
    if items.is_empty() {
        return format!("{none}\n");
    }
    let mut out = String::new();
    let mut used = 0;
    for item in items {
        let size = item.chars().count();
        if used + size <= budget {
            let _ = writeln!(out, "- {item}");
            used += size;
        } else {
            let room = budget.saturating_sub(used);
            if room > 0 {
                let cut: String = item.chars().take(room).collect();
                let _ = writeln!(out, "- {cut}…");
            }
            break;
        }
    }
    out
}

/// `- item` lines with no budget, or `none` without a newline: the memory lists of the
/// long-term integration, which sees every memory it is to integrate.
fn plain_list(items: &[String], none: &str) -> String {
    if items.is_empty() { none.to_owned() } else { items.iter().map(|i| format!("- {i}\n")).collect() }
}

/// A one-to-one transcript as `speaker: text` lines.
fn chat_lines(p: &ChatPrompt<'_>) -> Vec<String> {
    p.transcript
        .iter()
        .map(|(is_user, text)| format!("{}: {}", if *is_user { p.user_name } else { p.character_name }, text))
        .collect()
}

/// Part ⑥'s body: the newest transcript lines within `budget`, or `none`.
fn push_transcript(prompt: &mut String, lines: &[String], budget: usize, none: &str) {
    let kept = newest_within(lines, budget);
    if kept.is_empty() {
        prompt.push_str(none);
        prompt.push('\n');
    }
    for line in kept {
        prompt.push_str(line);
        prompt.push('\n');
    }
}

/// The newest lines whose total size fits in `budget` characters, oldest first. The original
/// kept the *beginning* of the transcript, so long chats lost their latest turns.
fn newest_within(lines: &[String], budget: usize) -> &[String] {
    let mut used = 0;
    let mut start = lines.len();
    for (index, line) in lines.iter().enumerate().rev() {
        used += line.chars().count();
        if used > budget {
            break;
        }
        start = index;
    }
    &lines[start..]
}

/// The first `count` characters of `text`: a member's brief as other prompts show it, capped so
/// one long brief cannot crowd out the rest.
fn first_chars(text: &str, count: usize) -> String {
    text.chars().take(count).collect()
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transcript_keeps_the_newest_lines() {
        let lines: Vec<String> = ["一二三", "四五六", "七八九"].iter().map(|s| s.to_string()).collect();
        assert_eq!(newest_within(&lines, 6), &lines[1..]);
        assert_eq!(newest_within(&lines, 2), &[] as &[String]);
        assert_eq!(newest_within(&lines, 100), &lines[..]);
    }

    #[test]
    fn memory_lists_are_cut_to_their_budget() {
        let items = vec!["甲 | 说 | 一".to_owned(), "乙 | 说 | 二".to_owned()];
        assert_eq!(bullet_list(&items, 10, "（无）"), "- 甲 | 说 | 一\n- 乙…\n");
        assert_eq!(bullet_list(&[], 10, "(none)"), "(none)\n");
    }

    #[test]
    fn chinese_sources_are_detected_as_chinese() {
        let source = "诸葛亮，字孔明，琅琊阳都人，三国时期蜀汉丞相，杰出的政治家、军事家。\
                      早年隐居隆中，刘备三顾茅庐后出山辅佐，联吴抗曹，五次北伐，病逝于五丈原。";
        assert_eq!(Language::detect(source), Language::Zh);
        let with_latin = "# 诸葛亮\n\n来源：https://zh.wikipedia.org/wiki/Zhuge_Liang\n\n诸葛亮（181年－234年），\
                          字孔明，号卧龙，琅琊阳都人。英文名 Zhuge Liang。";
        assert_eq!(Language::detect(with_latin), Language::Zh);
    }

    #[test]
    fn english_sources_are_detected_as_english() {
        let source = "Ada Lovelace was an English mathematician and writer, chiefly known for her work on \
                      Charles Babbage's proposed mechanical general-purpose computer, the Analytical Engine.";
        assert_eq!(Language::detect(source), Language::En);
    }

    #[test]
    fn english_quoting_a_few_chinese_names_is_english() {
        let source = "Zhuge Liang (诸葛亮), courtesy name Kongming (孔明), was a chancellor and regent of the \
                      state of Shu Han during the Three Kingdoms period. He served Liu Bei (刘备) and later \
                      his son Liu Shan, and led five northern expeditions against Cao Wei.";
        assert_eq!(Language::detect(source), Language::En);
    }

    #[test]
    fn text_without_letters_is_chinese_the_default() {
        assert_eq!(Language::detect(""), Language::Zh);
        assert_eq!(Language::detect("  181—234, 42!  "), Language::Zh);
        assert_eq!(Language::default(), Language::Zh);
    }

    #[test]
    fn only_the_opening_of_a_long_text_is_read() {
        let text = format!("{}{}", "Zhuge Liang ".repeat(400), "诸葛亮".repeat(10_000));
        assert_eq!(Language::detect(&text), Language::En);
    }

    #[test]
    fn language_tags_parse_by_their_primary_subtag() {
        for tag in ["zh", "ZH", "zh-CN", "zh-Hans", "zh-TW", "zh_CN.UTF-8", " zh-hant-hk "] {
            assert_eq!(tag.parse::<Language>(), Ok(Language::Zh), "{tag}");
        }
        for tag in ["en", "EN", "en-US", "en-gb", "en_US.UTF-8"] {
            assert_eq!(tag.parse::<Language>(), Ok(Language::En), "{tag}");
        }
        for tag in ["", "fr", "zhx", "eng", "english", "-zh"] {
            assert_eq!(tag.parse::<Language>(), Err(UnsupportedLanguage(tag.to_owned())), "{tag}");
        }
    }

    #[test]
    fn languages_serialize_as_their_codes() {
        for language in Language::ALL {
            let json = serde_json::to_string(&language).unwrap();
            assert_eq!(json, format!("\"{}\"", language.code()));
            assert_eq!(serde_json::from_str::<Language>(&json).unwrap(), language);
            assert_eq!(language.code().parse::<Language>(), Ok(language));
            assert_eq!(language.to_string(), language.code());
        }
    }

    #[test]
    fn each_language_has_its_own_set_and_version() {
        for language in Language::ALL {
            let set = language.prompts();
            assert_eq!(set.language(), language);
            assert!(set.version().starts_with(&format!("{}-", language.code())), "{}", set.version());
        }
        assert_ne!(Language::Zh.prompts().version(), Language::En.prompts().version());
    }

    #[test]
    fn every_set_labels_every_field_and_category() {
        for language in Language::ALL {
            let set = language.prompts();
            for category in &CATEGORIES {
                assert!(!set.category_label(category).trim().is_empty(), "{language} {}", category.key);
                for field in category.fields {
                    assert!(!set.field_label(field).trim().is_empty(), "{language} {}", field.key);
                    assert!(!set.field_guidance(field).trim().is_empty(), "{language} {}", field.key);
                }
            }
        }
    }
}
