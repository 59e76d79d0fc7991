//! Character Cards (the SillyTavern ecosystem's exchange format): reading V1, V2 and V3 cards
//! from JSON or PNG, and writing a FastNPC character as a V2 or V3 card.
//!
//! Writing maps the profile onto the card's prose fields (in the character's language, with the
//! same field labels the chat prompt uses) and keeps the whole FastNPC character under
//! `data.extensions.fastnpc`, so FastNPC → card → FastNPC restores every field exactly. Reading
//! takes a card's `data` as the card holds it; what it means for a FastNPC profile is
//! [`profile_from_card`]'s business, which keeps every text of the card somewhere (never drops
//! it).
//!
//! V2: <https://github.com/malfoyslastname/character-card-spec-v2>; V3:
//! <https://github.com/kwaroran/character-card-spec-v3>. A V2 PNG carries base64 JSON in a `tEXt`
//! chunk keyed `chara`; a V3 PNG in `ccv3` (and, for older readers, a V2 rendering in `chara`).

pub mod png;

use base64::Engine as _;
use fastnpc_shared::{
    domain::{CharacterSource, profile::CATEGORIES},
    prompts::Language,
};
use serde_json::{Map, Value, json};

/// The card versions FastNPC writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Spec {
    V2,
    V3,
}

/// The card version a file held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardVersion {
    /// TavernAI's flat object (including the Pygmalion field names).
    V1,
    V2,
    V3,
}

/// A card as read: its version and its `data` object (for V1, the fields under their V2 names).
#[derive(Debug, PartialEq)]
pub struct ReadCard {
    pub version: CardVersion,
    pub data: Map<String, Value>,
}

impl ReadCard {
    /// A text field of the card, trimmed; empty when absent or not text.
    pub fn text(&self, field: &str) -> &str {
        self.data.get(field).and_then(Value::as_str).map_or("", str::trim)
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error(transparent)]
    Png(#[from] png::PngError),
    #[error("a JPEG image: character cards are PNG images or JSON files")]
    Jpeg,
    #[error("the file is neither a PNG image nor a JSON document")]
    UnknownFormat,
    #[error("the PNG holds no character card (no `ccv3` or `chara` text chunk)")]
    NoCardInPng,
    #[error("the PNG's `{0}` chunk is not base64")]
    NotBase64(String),
    #[error("the card is not JSON: {0}")]
    NotJson(String),
    #[error("not a character card: {0}")]
    NotACard(String),
}

/// Reads a card from a file's bytes: a PNG (its `ccv3` chunk preferred over `chara`) or JSON.
pub fn read(bytes: &[u8]) -> Result<ReadCard, CardError> {
    if bytes.starts_with(&png::SIGNATURE) {
        let chunks = png::text_chunks(bytes)?;
        let chunk = ["ccv3", "chara"]
            .iter()
            .find_map(|keyword| chunks.iter().find(|chunk| chunk.keyword == *keyword))
            .ok_or(CardError::NoCardInPng)?;
        let encoded: Vec<u8> = chunk.text.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        let json = base64::engine::general_purpose::STANDARD
            .decode(&encoded)
            .map_err(|_| CardError::NotBase64(chunk.keyword.clone()))?;
        return parse_json(&json);
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Err(CardError::Jpeg);
    }
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => parse_json(bytes),
        _ => Err(CardError::UnknownFormat),
    }
}

/// V1 names (TavernAI's, and Pygmalion's) of the V2 fields.
const V1_ALIASES: [(&str, &str); 11] = [
    ("name", "name"),
    ("char_name", "name"),
    ("description", "description"),
    ("personality", "personality"),
    ("char_persona", "personality"),
    ("scenario", "scenario"),
    ("world_scenario", "scenario"),
    ("first_mes", "first_mes"),
    ("char_greeting", "first_mes"),
    ("mes_example", "mes_example"),
    ("example_dialogue", "mes_example"),
];

/// Reads a card from JSON text.
pub fn parse_json(json: &[u8]) -> Result<ReadCard, CardError> {
    let value: Value = serde_json::from_slice(json).map_err(|error| CardError::NotJson(error.to_string()))?;
    let Value::Object(mut card) = value else {
        return Err(CardError::NotACard("the JSON is not an object".into()));
    };
    let spec = card.get("spec").and_then(Value::as_str).map(str::to_owned);
    let (version, data) = match spec.as_deref() {
        Some(spec @ ("chara_card_v2" | "chara_card_v3")) => {
            let version = if spec == "chara_card_v3" { CardVersion::V3 } else { CardVersion::V2 };
            let Some(Value::Object(data)) = card.remove("data") else {
                return Err(CardError::NotACard(format!("a {spec} card without a `data` object")));
            };
            (version, data)
        }
        Some(other) => return Err(CardError::NotACard(format!("unknown spec `{other}`"))),
        None => {
            let mut data = Map::new();
            for (v1, v2) in V1_ALIASES {
                if let Some(value @ Value::String(_)) = card.get(v1)
                    && !data.contains_key(v2)
                {
                    data.insert(v2.to_owned(), value.clone());
                }
            }
            (CardVersion::V1, data)
        }
    };
    let card = ReadCard { version, data };
    if card.text("name").is_empty() {
        return Err(CardError::NotACard("it has no name".into()));
    }
    if card.version == CardVersion::V1
        && ["description", "personality", "first_mes"].iter().all(|field| card.text(field).is_empty())
    {
        return Err(CardError::NotACard("a name alone, without description, personality or greeting".into()));
    }
    Ok(card)
}

/// What a FastNPC character holds, for its card.
pub struct CharacterForCard<'a> {
    pub name: &'a str,
    pub brief: Option<&'a str>,
    pub profile: &'a Value,
    pub language: &'a str,
    pub source: &'a Value,
    pub source_snapshot: Option<&'a Value>,
    pub version: i64,
    /// The card it was imported from (`data`), whose fields FastNPC does not model (greetings,
    /// lorebook, extensions, creator) go back out with it.
    pub imported: Option<&'a Map<String, Value>>,
    /// The character is still the version the card made: the card's own prose (description,
    /// personality, scenario) goes back out as it came, not re-rendered from the profile.
    pub unchanged_since_import: bool,
    /// Long-term memories to carry as lorebook entries (none unless asked for).
    pub memory: &'a [String],
}

/// Marks the lorebook entries written from long-term memory, so a later export replaces them
/// rather than adding the same memories again.
const MEMORY_ENTRY: &str = "long_term_memory";

/// The card's lorebook with `memory` as always-on entries (`constant`, no keys: a memory is
/// part of who the character is, not triggered by a word), after the entries an earlier export
/// wrote from memory are taken out. `None` when there is neither a lorebook nor memory.
fn character_book(name: &str, book: Option<Value>, memory: &[String], spec: Spec) -> Option<Value> {
    if memory.is_empty() {
        return book;
    }
    let mut book = match book {
        Some(Value::Object(book)) => book,
        _ => Map::from_iter([
            ("name".to_owned(), json!(format!("{name}: memory"))),
            ("extensions".to_owned(), json!({})),
        ]),
    };
    let mut entries: Vec<Value> = match book.remove("entries") {
        Some(Value::Array(entries)) => entries,
        _ => Vec::new(),
    };
    entries.retain(|entry| entry.pointer("/extensions/fastnpc/kind").and_then(Value::as_str) != Some(MEMORY_ENTRY));
    let first_id = entries.iter().filter_map(|entry| entry.get("id").and_then(Value::as_i64)).max().unwrap_or(-1) + 1;
    for (id, (order, content)) in (first_id..).zip(memory.iter().enumerate()) {
        let mut entry = json!({
            "id": id,
            "keys": [],
            "content": content,
            "extensions": {"fastnpc": {"kind": MEMORY_ENTRY}},
            "enabled": true,
            "insertion_order": order,
            "constant": true,
            "comment": "FastNPC long-term memory",
        });
        if spec == Spec::V3 {
            entry["use_regex"] = json!(false);
        }
        entries.push(entry);
    }
    book.insert("entries".to_owned(), Value::Array(entries));
    Some(Value::Object(book))
}

/// The `extensions.fastnpc` object: the character, whole.
fn fastnpc_extension(character: &CharacterForCard<'_>) -> Value {
    json!({
        "format": 1,
        "name": character.name,
        "brief": character.brief,
        "profile": character.profile,
        "language": character.language,
        "source": character.source,
        "version": character.version,
    })
}

/// One category rendered as "label: value" lines in the character's language, the way the
/// chat prompt shows it; empty fields left out.
fn render_category(profile: &Value, key: &str, language: Language, only: Option<&[&str]>) -> String {
    let Some(category) = CATEGORIES.iter().find(|c| c.key == key) else { return String::new() };
    let prompts = language.prompts();
    let mut lines = Vec::new();
    for field in category.fields {
        if only.is_some_and(|only| !only.contains(&field.key)) {
            continue;
        }
        let text = match profile.get(key).and_then(|c| c.get(field.key)) {
            Some(Value::String(text)) => text.trim().to_owned(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
            _ => String::new(),
        };
        if !text.is_empty() {
            lines.push(format!("{}: {text}", prompts.field_label(field)));
        }
    }
    lines.join("\n")
}

fn joined(parts: &[String]) -> String {
    parts.iter().filter(|p| !p.is_empty()).cloned().collect::<Vec<_>>().join("\n\n")
}

/// Where the character came from, with its attribution: the card's `creator_notes`.
fn attribution(character: &CharacterForCard<'_>, language: Language) -> String {
    let url = character.source_snapshot.and_then(|s| s.get("url")).and_then(Value::as_str);
    let origin = match character.source.get("kind").and_then(Value::as_str) {
        Some("wikipedia") => {
            let title = character.source.get("title").and_then(Value::as_str).unwrap_or_default();
            let note = "Wikipedia (CC BY-SA 4.0)";
            format!("{note}: {title}{}", url.map(|u| format!(" <{u}>")).unwrap_or_default())
        }
        Some("baike") => {
            let title = character.source.get("title").and_then(Value::as_str).unwrap_or_default();
            format!("Baidu Baike: {title}{}", url.map(|u| format!(" <{u}>")).unwrap_or_default())
        }
        Some("url") => url.or(character.source.get("url").and_then(Value::as_str)).unwrap_or_default().to_owned(),
        _ => match language {
            Language::Zh => "用户提供的文本".to_owned(),
            Language::En => "text its creator provided".to_owned(),
        },
    };
    match language {
        Language::Zh => format!("由 FastNPC 根据资料生成。来源：{origin}"),
        Language::En => format!("Generated by FastNPC from a source. Source: {origin}"),
    }
}

/// The role-play rules FastNPC's chat prompt gives every character: the card's `system_prompt`.
fn roleplay_rules(language: Language) -> &'static str {
    match language {
        Language::Zh => {
            "你是{{char}}，与{{user}}对话。始终以{{char}}的身份、语气和知识说话，不跳出角色，不提及自己是AI；\
             只知道{{char}}所处时代与经历中的事；回答简洁自然，像真实的对话。"
        }
        Language::En => {
            "You are {{char}}, talking with {{user}}. Always speak as {{char}}, in their voice and with their \
             knowledge; never break character or mention being an AI; know only what {{char}}'s time and life \
             would let them know; answer briefly and naturally, as in a real conversation."
        }
    }
}

/// A FastNPC character as a card of `spec`.
pub fn write(character: &CharacterForCard<'_>, spec: Spec) -> Value {
    let language = character.language.parse::<Language>().unwrap_or_default();
    let profile = character.profile;
    let imported = |field: &str| character.imported.and_then(|card| card.get(field)).cloned();
    let description = joined(&[
        render_category(profile, "basic_identity", language, None),
        render_category(profile, "background", language, None),
    ]);
    let personality = joined(&[
        render_category(profile, "personality", language, None),
        render_category(profile, "dialogue_rules", language, Some(&["tone", "language_style"])),
    ]);
    let scenario = render_category(profile, "worldview", language, None);
    let prose = |field: &str, rendered: String| match imported(field) {
        Some(original) if character.unchanged_since_import => original,
        _ => json!(rendered),
    };
    let brief = character.brief.unwrap_or_default();
    let greeting = imported("first_mes")
        .unwrap_or_else(|| json!(if brief.is_empty() { String::new() } else { format!("*{brief}*") }));
    let speaking = profile.get("personality").and_then(|p| p.get("speaking_style")).and_then(Value::as_str);
    let example = imported("mes_example").unwrap_or_else(|| {
        json!(
            speaking
                .filter(|s| !s.trim().is_empty())
                .map(|s| format!("<START>\n{{{{char}}}}: *{}*", s.trim()))
                .unwrap_or_default()
        )
    });
    let mut extensions = match imported("extensions") {
        Some(Value::Object(extensions)) => extensions,
        _ => Map::new(),
    };
    extensions.insert("fastnpc".to_owned(), fastnpc_extension(character));
    let mut tags = match imported("tags") {
        Some(Value::Array(tags)) => tags,
        _ => Vec::new(),
    };
    if !tags.iter().any(|tag| tag == "FastNPC") {
        tags.push(json!("FastNPC"));
    }
    let mut data = json!({
        "name": character.name,
        "description": prose("description", description),
        "personality": prose("personality", personality),
        "scenario": prose("scenario", scenario),
        "first_mes": greeting,
        "mes_example": example,
        "creator_notes": imported("creator_notes").unwrap_or_else(|| json!(attribution(character, language))),
        "system_prompt": imported("system_prompt").unwrap_or_else(|| json!(roleplay_rules(language))),
        "post_history_instructions": imported("post_history_instructions").unwrap_or_else(|| json!("")),
        "alternate_greetings": imported("alternate_greetings").unwrap_or_else(|| json!([])),
        "tags": tags,
        "creator": imported("creator").unwrap_or_else(|| json!("FastNPC")),
        "character_version": character.version.to_string(),
        "extensions": extensions,
    });
    if let Some(book) = character_book(character.name, imported("character_book"), character.memory, spec) {
        data["character_book"] = book;
    }
    match spec {
        Spec::V2 => json!({"spec": "chara_card_v2", "spec_version": "2.0", "data": data}),
        Spec::V3 => {
            data["group_only_greetings"] = imported("group_only_greetings").unwrap_or_else(|| json!([]));
            if let Some(assets) = imported("assets") {
                data["assets"] = assets;
            }
            json!({"spec": "chara_card_v3", "spec_version": "3.0", "data": data})
        }
    }
}

/// A card as PNG `tEXt` chunks: V2 in `chara`; V3 in `ccv3` and, for readers that know only V2,
/// its V2 rendering in `chara`.
pub fn png_chunks(character: &CharacterForCard<'_>, spec: Spec) -> Vec<(&'static str, String)> {
    let encode = |card: &Value| base64::engine::general_purpose::STANDARD.encode(card.to_string());
    match spec {
        Spec::V2 => vec![("chara", encode(&write(character, Spec::V2)))],
        Spec::V3 => vec![("ccv3", encode(&write(character, Spec::V3))), ("chara", encode(&write(character, Spec::V2)))],
    }
}

/// A FastNPC character from a card, as it will be stored.
#[derive(Debug, PartialEq)]
pub struct CardCharacter {
    pub name: String,
    pub brief: Option<String>,
    pub profile: Value,
    pub language: Language,
    /// The stored source (`CharacterSource` as JSON): the FastNPC one a card of ours carried,
    /// else the card's text, from which the profile could be generated again.
    pub source: Value,
}

/// What a card means for FastNPC: exactly the character under `extensions.fastnpc` when the
/// card is one of ours (and the name the card now carries); otherwise each text of the card in
/// the category it describes, every field of the profile present.
pub fn character_from_card(card: &ReadCard) -> CardCharacter {
    let name = card.text("name").to_owned();
    if let Some(ours) = card.data.get("extensions").and_then(|e| e.get("fastnpc"))
        && let (Some(profile @ Value::Object(_)), Some(source)) = (ours.get("profile"), ours.get("source"))
        && serde_json::from_value::<CharacterSource>(source.clone()).is_ok_and(|source| source.validate().is_ok())
    {
        return CardCharacter {
            name,
            brief: ours.get("brief").and_then(Value::as_str).map(str::to_owned),
            profile: profile.clone(),
            language: ours.get("language").and_then(Value::as_str).and_then(|l| l.parse().ok()).unwrap_or_default(),
            source: source.clone(),
        };
    }
    let description = card.text("description");
    let all_text = ["description", "personality", "scenario", "first_mes", "mes_example"]
        .iter()
        .map(|field| card.text(field))
        .collect::<Vec<_>>()
        .join("\n");
    let language = Language::detect(&all_text);
    // Every field present (a profile is complete), the card's texts where they belong.
    let mut profile = fastnpc_shared::domain::profile::empty_profile();
    let mut put = |category: &str, field: &str, text: &str| {
        if !text.is_empty() {
            profile[category][field] = json!(text);
        }
    };
    put("basic_identity", "name", &name);
    put("basic_identity", "identity_background", description);
    put("personality", "traits", card.text("personality"));
    put("personality", "speaking_style", card.text("mes_example"));
    put("background", "current_situation", card.text("scenario"));
    put("dialogue_rules", "interaction_pattern", card.text("first_mes"));
    put("dialogue_rules", "behavior_constraints", card.text("system_prompt"));
    put("system_params", "preference_control", card.text("post_history_instructions"));
    put("source", "unique_id", &name);
    put(
        "source",
        "source_size",
        &match language {
            Language::Zh => format!("约{}字", all_text.chars().count()),
            Language::En => format!("about {} characters", all_text.chars().count()),
        },
    );
    let brief = description.split(['\n']).map(str::trim).find(|line| !line.is_empty()).map(|line| {
        let cut: String = line.chars().take(300).collect();
        cut
    });
    let mut source_text = format!("# {name}\n\n{all_text}");
    let creator_notes = card.text("creator_notes");
    if !creator_notes.is_empty() {
        source_text.push_str(&format!("\n\n{creator_notes}"));
    }
    CardCharacter {
        name,
        brief,
        profile: Value::Object(profile),
        language,
        source: json!({"kind": "text", "text": source_text}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Value {
        let mut profile = Map::new();
        for category in CATEGORIES.iter() {
            let fields: Map<String, Value> = category
                .fields
                .iter()
                .map(|f| {
                    (
                        f.key.to_owned(),
                        if f.list { json!([format!("{} 一", f.zh)]) } else { json!(format!("{}的内容", f.zh)) },
                    )
                })
                .collect();
            profile.insert(category.key.to_owned(), Value::Object(fields));
        }
        Value::Object(profile)
    }

    fn ours<'a>(profile: &'a Value, source: &'a Value) -> CharacterForCard<'a> {
        CharacterForCard {
            name: "诸葛亮",
            brief: Some("蜀汉丞相。"),
            profile,
            language: "zh",
            source,
            source_snapshot: None,
            version: 4,
            imported: None,
            unchanged_since_import: false,
            memory: &[],
        }
    }

    #[test]
    fn a_fastnpc_card_round_trips_exactly_in_both_specs_and_both_containers() {
        let (profile, source) = (
            profile(),
            json!({"kind": "text", "text": "诸葛亮，字孔明，琅琊阳都人，三国时期蜀汉丞相，杰出的政治家、军事家。"}),
        );
        let character = ours(&profile, &source);
        for spec in [Spec::V2, Spec::V3] {
            let card = write(&character, spec);
            let from_json = read(card.to_string().as_bytes()).unwrap();
            let image = png::placeholder(8, [1, 2, 3]);
            let chunks = png_chunks(&character, spec);
            let chunks: Vec<(&str, &str)> = chunks.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let from_png = read(&png::with_text_chunks(&image, &chunks).unwrap()).unwrap();
            assert_eq!(from_png, from_json);
            let back = character_from_card(&from_json);
            assert_eq!(back.name, "诸葛亮");
            assert_eq!(back.brief.as_deref(), Some("蜀汉丞相。"));
            assert_eq!(back.profile, profile);
            assert_eq!(back.source, source);
            assert_eq!(back.language, Language::Zh);
        }
    }

    #[test]
    fn a_v3_png_is_read_from_ccv3_before_chara() {
        let (profile, source) = (profile(), json!({"kind": "text", "text": "x".repeat(40)}));
        let character = ours(&profile, &source);
        let chunks = png_chunks(&character, Spec::V3);
        assert_eq!(chunks.iter().map(|(k, _)| *k).collect::<Vec<_>>(), ["ccv3", "chara"]);
        let chunks: Vec<(&str, &str)> = chunks.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let read = read(&png::with_text_chunks(&png::placeholder(2, [0, 0, 0]), &chunks).unwrap()).unwrap();
        assert_eq!(read.version, CardVersion::V3);
    }

    #[test]
    fn the_prose_fields_hold_the_profile_in_the_characters_language() {
        let (profile, source) = (profile(), json!({"kind": "wikipedia", "lang": "zh", "title": "诸葛亮"}));
        let card = write(&ours(&profile, &source), Spec::V2);
        let data = &card["data"];
        assert!(data["description"].as_str().unwrap().contains("姓名: 姓名的内容"));
        assert!(data["description"].as_str().unwrap().contains("经历: 经历 一"));
        assert!(data["personality"].as_str().unwrap().contains("性格特质: 性格特质的内容"));
        assert!(data["scenario"].as_str().unwrap().contains("世界观"));
        assert_eq!(data["first_mes"], "*蜀汉丞相。*");
        assert!(data["mes_example"].as_str().unwrap().starts_with("<START>\n{{char}}: *说话方式的内容*"));
        assert!(data["creator_notes"].as_str().unwrap().contains("Wikipedia (CC BY-SA 4.0): 诸葛亮"));
        assert_eq!(data["character_version"], "4");
        assert_eq!(data["tags"], json!(["FastNPC"]));
    }

    #[test]
    fn a_foreign_card_keeps_every_text_and_fills_every_field() {
        let v1 = json!({"char_name": "Aqua", "char_persona": "Cheerful goddess.", "world_scenario": "A guild hall.",
                        "char_greeting": "Hi there!", "example_dialogue": "<START>\n{{char}}: Hello!",
                        "description": "A water goddess who joined an adventuring party.\nShe is loud."});
        let card = parse_json(v1.to_string().as_bytes()).unwrap();
        assert_eq!(card.version, CardVersion::V1);
        let character = character_from_card(&card);
        assert_eq!(character.name, "Aqua");
        assert_eq!(character.language, Language::En);
        assert_eq!(character.brief.as_deref(), Some("A water goddess who joined an adventuring party."));
        assert_eq!(character.profile["personality"]["traits"], "Cheerful goddess.");
        assert_eq!(character.profile["background"]["current_situation"], "A guild hall.");
        assert_eq!(character.profile["dialogue_rules"]["interaction_pattern"], "Hi there!");
        assert_eq!(character.profile["background"]["experiences"], json!([]));
        for category in CATEGORIES.iter() {
            for field in category.fields {
                assert!(character.profile[category.key].get(field.key).is_some(), "{}.{}", category.key, field.key);
            }
        }
        let text = character.source["text"].as_str().unwrap();
        for part in ["Cheerful goddess.", "A guild hall.", "Hi there!", "{{char}}: Hello!", "She is loud."] {
            assert!(text.contains(part), "{part} is kept in the source");
        }
    }

    #[test]
    fn what_is_not_a_card_is_refused_with_a_reason() {
        assert_eq!(read(b"\xff\xd8\xff\xe0\x00\x10JFIF"), Err(CardError::Jpeg));
        assert_eq!(read(b"hello"), Err(CardError::UnknownFormat));
        assert!(matches!(read(b"{\"name\": "), Err(CardError::NotJson(_))));
        assert!(matches!(read(b"{\"spec\": \"chara_card_v9\", \"data\": {}}"), Err(CardError::NotACard(_))));
        assert!(matches!(
            read(b"{\"spec\": \"chara_card_v2\", \"data\": {\"name\": \"\"}}"),
            Err(CardError::NotACard(_))
        ));
        assert!(matches!(read(b"{\"name\": \"Only a name\"}"), Err(CardError::NotACard(_))));
        let image = png::placeholder(2, [0, 0, 0]);
        assert_eq!(read(&image), Err(CardError::NoCardInPng));
        let not_base64 = png::with_text_chunks(&image, &[("chara", "this is not base64!")]).unwrap();
        assert_eq!(read(&not_base64), Err(CardError::NotBase64("chara".into())));
        let not_json = png::with_text_chunks(&image, &[("chara", "aGVsbG8=")]).unwrap();
        assert!(matches!(read(&not_json), Err(CardError::NotJson(_))));
    }

    #[test]
    fn long_term_memory_goes_out_as_always_on_lorebook_entries_replacing_an_earlier_export_of_it() {
        let (profile, source) = (profile(), json!({"kind": "text", "text": "诸葛亮，字孔明。"}));
        let memory = ["用户 | 是 | 画家".to_owned(), "用户 | 住在 | 成都".to_owned()];
        let character = CharacterForCard { memory: &memory, ..ours(&profile, &source) };
        let card = write(&character, Spec::V3);
        let entries = card["data"]["character_book"]["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["content"], "用户 | 是 | 画家");
        assert_eq!(
            (&entries[0]["constant"], &entries[0]["keys"], &entries[1]["id"]),
            (&json!(true), &json!([]), &json!(1))
        );
        assert_eq!(entries[0]["use_regex"], false, "V3 entries name it");
        assert!(write(&ours(&profile, &source), Spec::V2)["data"].get("character_book").is_none(), "not unless asked");

        // A card carrying an earlier export's memory, and a lorebook entry of its own.
        let mut imported = card["data"].as_object().unwrap().clone();
        let mut book = imported["character_book"].clone();
        book["entries"].as_array_mut().unwrap().push(json!({"id": 7, "keys": ["成都"], "content": "蜀汉的都城"}));
        imported.insert("character_book".into(), book);
        let newer = ["用户 | 爱 | 茶".to_owned()];
        let again = CharacterForCard { imported: Some(&imported), memory: &newer, ..ours(&profile, &source) };
        let entries = write(&again, Spec::V2)["data"]["character_book"]["entries"].as_array().unwrap().clone();
        let contents: Vec<&str> = entries.iter().map(|entry| entry["content"].as_str().unwrap()).collect();
        assert_eq!(contents, ["蜀汉的都城", "用户 | 爱 | 茶"], "the old memory replaced, the card's own entry kept");
        assert_eq!(entries[1]["id"], 8);
        assert!(entries[1].get("use_regex").is_none(), "V2 entries do not");
    }
}

/// Real cards as their projects distribute them (`tests/fixtures/cards/`, with their origin).
#[cfg(test)]
mod real_cards {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cards").join(name);
        std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }

    #[test]
    fn sillytaverns_seraphina_is_read_with_her_greeting_lorebook_and_extensions() {
        let card = read(&fixture("sillytavern-seraphina.png")).unwrap();
        assert_eq!(card.version, CardVersion::V2);
        assert_eq!(card.text("name"), "Seraphina");
        assert!(card.text("first_mes").starts_with("*You wake with a start, recalling the events"));
        assert!(card.text("description").starts_with("[Seraphina's Personality= \"caring\""));
        assert_eq!(card.data["character_book"]["entries"].as_array().unwrap().len(), 4);
        assert_eq!(card.data["extensions"]["world"], "Eldoria");

        let character = character_from_card(&card);
        assert_eq!(character.name, "Seraphina");
        assert_eq!(character.language, Language::En);
        assert!(character.profile["basic_identity"]["identity_background"].as_str().unwrap().contains("caring"));
        assert!(character.source["text"].as_str().unwrap().contains("You wake with a start"));

        // Written back out, what FastNPC does not model comes back as it was.
        let data = card.data.clone();
        let for_card = CharacterForCard {
            name: &character.name,
            brief: character.brief.as_deref(),
            profile: &character.profile,
            language: "en",
            source: &character.source,
            source_snapshot: None,
            version: 1,
            imported: Some(&data),
            unchanged_since_import: true,
            memory: &[],
        };
        let out = write(&for_card, Spec::V3);
        for field in [
            "description",
            "first_mes",
            "mes_example",
            "character_book",
            "alternate_greetings",
            "creator",
            "system_prompt",
        ] {
            assert_eq!(out["data"][field], data[field], "{field}");
        }
        assert_eq!(out["data"]["extensions"]["world"], "Eldoria");
        assert_eq!(out["data"]["extensions"]["fastnpc"]["name"], "Seraphina");
    }
}
